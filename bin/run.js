#!/usr/bin/env node
// `derp serve` first re-executes itself with V8's young generation capped (src/lib/node/heap.ts):
// before oclif loads, so the second start costs only Node's own.
import { reexecWithHeapCap } from '../dist/lib/node/heap.js';

reexecWithHeapCap();
const { execute, settings } = await import('@oclif/core');

// The built CLI always runs dist/: never look for TypeScript sources, whatever NODE_ENV says.
settings.enableAutoTranspile = false;
await execute({ dir: import.meta.url });
