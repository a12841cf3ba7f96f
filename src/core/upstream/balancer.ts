import type { UpstreamNode } from '../schema/upstream.ts';

/**
 * Smooth weighted round robin (nginx's algorithm): over any window of sum(weights) picks, each node is
 * chosen weight times, interleaved rather than in bursts. Weight-0 nodes are never picked when other
 * nodes exist; a lone node is always used (APISIX bypasses the picker for a single node). Only the
 * highest `priority` group is used: lower groups are fall-backs APISIX reaches after failures, which
 * fngate's retry walks in order.
 */
export interface Picker {
  /** The node to try for the `attempt`-th time (0 = first try) of one request. */
  pick(attempt: number): UpstreamNode;
  readonly size: number;
}

export function createPicker(nodes: readonly UpstreamNode[]): Picker | undefined {
  if (nodes.length === 0) return undefined;
  if (nodes.length === 1) {
    const only = nodes[0]!;
    return { pick: () => only, size: 1 };
  }
  const byPriority = [...new Set(nodes.map((n) => n.priority))].sort((a, b) => b - a);
  const groups = byPriority
    .map((p) => nodes.filter((n) => n.priority === p && n.weight > 0))
    .filter((g) => g.length > 0);
  if (groups.length === 0) return undefined;
  const wrr = groups.map((g) => smoothWrr(g));
  const fallback = groups.flat();
  return {
    size: fallback.length,
    pick(attempt) {
      if (attempt === 0) return wrr[0]!();
      // Retries walk the remaining nodes in priority order.
      return fallback[attempt % fallback.length]!;
    },
  };
}

function smoothWrr(nodes: UpstreamNode[]): () => UpstreamNode {
  if (nodes.length === 1) {
    const only = nodes[0]!;
    return () => only;
  }
  const current = new Array<number>(nodes.length).fill(0);
  const total = nodes.reduce((s, n) => s + n.weight, 0);
  return () => {
    let best = 0;
    for (let i = 0; i < nodes.length; i++) {
      current[i]! += nodes[i]!.weight;
      if (current[i]! > current[best]!) best = i;
    }
    current[best]! -= total;
    return nodes[best]!;
  };
}
