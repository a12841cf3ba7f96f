import { basicAuth } from './basic-auth.ts';
import { consumerRestriction } from './consumer-restriction.ts';
import { cors } from './cors.ts';
import { faultInjection } from './fault-injection.ts';
import { hmacAuth } from './hmac-auth.ts';
import { ipRestriction } from './ip-restriction.ts';
import { jwtAuth } from './jwt-auth.ts';
import { keyAuth } from './key-auth.ts';
import { limitConn } from './limit-conn.ts';
import { limitCount } from './limit-count.ts';
import { limitReq } from './limit-req.ts';
import { mocking } from './mocking.ts';
import { cloudevents } from './cloudevents.ts';
import { openfunction } from './openfunction.ts';
import { openwhisk } from './openwhisk.ts';
import { awsLambda } from './aws-lambda.ts';
import { azureFunctions } from './azure-functions.ts';
import { fileLogger } from './file-logger.ts';
import { httpLogger } from './http-logger.ts';
import { opentelemetry } from './opentelemetry.ts';
import { prometheus } from './prometheus.ts';
import { proxyRewrite } from './proxy-rewrite.ts';
import { realIp } from './real-ip.ts';
import { redirect } from './redirect.ts';
import { requestId } from './request-id.ts';
import { responseRewrite } from './response-rewrite.ts';
import type { AnyPlugin } from './types.ts';

/** Every plugin fngate ships, by name. */
export const BUILTIN_PLUGINS: readonly AnyPlugin[] = [
  openfunction,
  openwhisk,
  azureFunctions,
  awsLambda,
  cors,
  ipRestriction,
  keyAuth,
  hmacAuth,
  basicAuth,
  jwtAuth,
  consumerRestriction,
  realIp,
  requestId,
  redirect,
  faultInjection,
  mocking,
  proxyRewrite,
  responseRewrite,
  limitCount,
  limitReq,
  limitConn,
  prometheus,
  httpLogger,
  fileLogger,
  opentelemetry,
  cloudevents,
];

/**
 * APISIX plugins that only observe traffic (metrics, tracing, logging, node status): a
 * route written straight into the store (etcd, a standalone file) that names one of them while fngate does not
 * implement it is served without it, with one log line. Any other plugin fngate does not have (an auth plugin,
 * a rate limit, but also `workflow`, `saml-auth`, `ai-rate-limiting`, `ext-plugin-*`,
 * `serverless-*-function`, `traffic-split`, `limit-count`, ... and every plugin this list does not know) makes the route
 * answer 503: fngate cannot tell whether a plugin it does not know guards access or changes what is served, so it
 * fails closed. Listed by exact name (every `*-logger` plugin APISIX ships is here); not a suffix rule, so a custom
 * plugin called `something-logger` still fails closed.
 */
export const HARMLESS_PLUGIN_NAMES: ReadonlySet<string> = new Set([
  // metrics and tracing
  'zipkin', 'skywalking', 'datadog', 'node-status', 'server-info',
  // logging
  'tcp-logger', 'udp-logger', 'kafka-logger', 'rocketmq-logger', 'syslog',
  'sls-logger', 'google-cloud-logging', 'splunk-hec-logging', 'clickhouse-logger', 'loggly',
  'elasticsearch-logger', 'tencent-cloud-cls', 'loki-logger', 'skywalking-logger', 'error-log-logger', 'log-rotate',
]);

/** May a plugin fngate does not implement be skipped (true), or must the route answer 503 (false)? */
export function isSkippablePlugin(name: string): boolean {
  return HARMLESS_PLUGIN_NAMES.has(name);
}

export type PluginRegistry = ReadonlyMap<string, AnyPlugin>;

export function pluginRegistry(plugins: readonly AnyPlugin[] = BUILTIN_PLUGINS): PluginRegistry {
  return new Map(plugins.map((p) => [p.name, p]));
}
