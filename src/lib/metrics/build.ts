/** The package version for derp_build_info, read once from package.json (two levels above src/lib or dist/lib). */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function packageVersion(): string {
  if (cached !== undefined) return cached;
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    cached = typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    // A bundled or relocated build has no package.json beside it: report that instead of failing the scrape.
    cached = 'unknown';
  }
  return cached;
}
