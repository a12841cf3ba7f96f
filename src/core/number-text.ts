/**
 * Decimal text without V8's double-to-text, which costs 200-500 ns per number (a small integer's text comes from a
 * cache): a value kept to a few decimals is written as its integer part and its fraction's text from a table.
 * Used on the hot path: the access log's milliseconds, limit-count's X-RateLimit-Reset.
 */
const tables: string[][] = [];

function fractions(places: number): string[] {
  let t = tables[places];
  if (t === undefined) {
    const size = 10 ** places;
    t = Array.from({ length: size }, (_, i) =>
      i === 0 ? '' : `.${String(i).padStart(places, '0').replace(/0+$/, '')}`,
    );
    tables[places] = t;
  }
  return t;
}

/**
 * The text of `scaled / 10 ** places` for an integer `scaled`, the same as `String(scaled / 10 ** places)` (a unit
 * test checks): the shortest decimal that reads back as that double is the one with at most `places` decimals.
 */
export function scaledText(scaled: number, places: number): string {
  const size = 10 ** places;
  if (!(scaled >= 0 && scaled < 2 ** 31 && Number.isInteger(scaled))) return String(scaled / size);
  const int = Math.floor(scaled / size);
  return String(int) + fractions(places)[scaled - int * size]!;
}
