#!/usr/bin/env -S node --import tsx
// Runs the CLI straight from src/ (no build step); for contributors.
import { execute } from '@oclif/core';

await execute({ development: true, dir: import.meta.url });
