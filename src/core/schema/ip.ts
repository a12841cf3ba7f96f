import * as v from 'valibot';
import { compileIpMatcher } from '../router/ip.ts';

/** Is `entry` an IPv4/IPv6 address or CIDR that {@link compileIpMatcher} takes (APISIX `validate_cidr_or_ip`)? */
function validIpEntry(entry: string): boolean {
  if (entry !== entry.trim()) return false;
  try {
    compileIpMatcher([entry]);
    return true;
  } catch {
    return false;
  }
}

/**
 * A list of IPv4 / IPv6 addresses and CIDRs (APISIX `ip_def` items, minItems 1), each checked by compiling it:
 * `invalid ip address: <entry>` as APISIX's plugins say.
 */
export const ipListSchema = v.pipe(
  v.array(v.string()),
  v.minLength(1),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const bad = dataset.value.find((e) => !validIpEntry(e));
    if (bad !== undefined) addIssue({ message: `invalid ip address: ${bad}` });
  }),
);
