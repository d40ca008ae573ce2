#!/usr/bin/env node
import { execute, settings } from '@oclif/core';

// The built CLI always runs dist/: never look for TypeScript sources, whatever NODE_ENV says.
settings.enableAutoTranspile = false;
await execute({ dir: import.meta.url });
