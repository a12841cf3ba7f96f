/** fngate's version (package.json's; test/unit/version.test.ts keeps the two equal). */
export const FNGATE_VERSION = '0.1.0';
