/** Lower-case host without port, from a Host header value (nginx `$host`). */
export function hostOf(hostHeader: string | null): string {
  if (!hostHeader) return '';
  let h = hostHeader;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    h = end >= 0 ? h.slice(0, end + 1) : h;
  } else {
    const colon = h.indexOf(':');
    if (colon >= 0) h = h.slice(0, colon);
    // nginx's $host drops one trailing dot of a fully qualified name.
    if (h.endsWith('.')) h = h.slice(0, -1);
  }
  return h.toLowerCase();
}
