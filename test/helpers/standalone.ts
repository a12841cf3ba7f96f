// biome-ignore-all lint/suspicious/noTemplateCurlyInString: APISIX's ${{VAR}} references
/**
 * Standalone mode (CONFIG_FILE) test material shared by test/conformance/standalone.test.ts and
 * test/e2e/standalone.test.ts: the config file, and replacing it the way editors and config tools do.
 */
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import type { FunctionServers } from '../functions/functions.ts';

export interface StandaloneYamlOptions {
  /** The `/hello` function's greeting: the last segment of its function_uri (default `${{FNGATE_GREETING}}`). */
  greeting?: string;
  /** The whole function_uri of `/hello` instead (overrides `greeting`). */
  fnUri?: string;
  /** YAML appended to the route list (items indented by two spaces). */
  extraRoute?: string;
}

/**
 * An APISIX `conf/apisix.yaml`: an openfunction route `/hello` (function-sample, with a service_token), a route
 * `/echo/*` on the named upstream `up-echo`, and a route `/inline` with an inline upstream, both on the echo function.
 */
export function standaloneYaml(fns: FunctionServers, opts: StandaloneYamlOptions = {}): string {
  const fnUri =
    opts.fnUri ?? `${fns.urls['function-sample']}/default/function-sample/${opts.greeting ?? '${{FNGATE_GREETING}}'}`;
  return `# fngate standalone config (APISIX conf/apisix.yaml format)
upstreams:
  - id: up-echo
    type: roundrobin
    nodes:
      "127.0.0.1:${fns.ports.echo}": 1
routes:
  - id: fn
    uri: /hello
    plugins:
      openfunction:
        function_uri: "${fnUri}"
        authorization:
          service_token: "test:test"
  - id: up
    uri: /echo/*
    upstream_id: up-echo
  - id: inline
    uri: /inline
    upstream:
      type: roundrobin
      nodes:
        "127.0.0.1:${fns.ports.echo}": 1
${opts.extraRoute ?? ''}#END
`;
}

/** Replace `path` atomically (write a temp file, rename it over), as most editors and config tools do. */
export async function replaceFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}
