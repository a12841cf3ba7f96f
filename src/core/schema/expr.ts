import * as v from 'valibot';
import { compileExpr } from '../expr.ts';

/**
 * `vars`-language rules (a route's `vars`, a plugin's `_meta.filter`, response-rewrite `vars`): an array, checked
 * by compiling it, with APISIX's message.
 */
export const exprSchema = v.pipe(
  v.array(v.unknown()),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return;
    const res = compileExpr(dataset.value);
    if (!res.ok) addIssue({ message: `failed to validate the 'vars' expression: ${res.message}` });
  }),
);
