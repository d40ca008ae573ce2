#!/usr/bin/env node
// `derp serve` first re-executes itself (same pid) with V8's young generation capped and, when the
// system has it, jemalloc preloaded (src/lib/node/heap.ts, allocator.ts): before oclif loads, so the
// second start costs only Node's own.
import { reexecForMemory } from '../dist/lib/node/heap.js';

reexecForMemory();
const { execute, settings } = await import('@oclif/core');

// The built CLI always runs dist/: never look for TypeScript sources, whatever NODE_ENV says.
settings.enableAutoTranspile = false;
await execute({ dir: import.meta.url });
