#!/usr/bin/env node
// Writes oclif.manifest.json from the built commands (what `oclif manifest` does, without the
// oclif packaging CLI and its cloud-SDK dependencies). `--check` fails if the file on disk is stale.
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Plugin, settings } from '@oclif/core';

// The manifest describes dist/, never the TypeScript sources (NODE_ENV=test would make oclif look for them).
settings.enableAutoTranspile = false;

const root = fileURLToPath(new URL('..', import.meta.url));
const file = new URL('../oclif.manifest.json', import.meta.url);

const plugin = new Plugin({ root, type: 'core', ignoreManifest: true, errorOnManifestCreate: true, respectNoCacheDefault: true });
await plugin.load();
// oclif loads command files concurrently, so their order varies from build to build: sort by id.
const manifest = { ...plugin.manifest, commands: Object.fromEntries(Object.entries(plugin.manifest.commands).sort(([a], [b]) => a.localeCompare(b))) };
const text = JSON.stringify(manifest, null, 2) + '\n';

if (process.argv.includes('--check')) {
  const onDisk = await readFile(file, 'utf8').catch(() => '');
  if (onDisk !== text) {
    console.error('oclif.manifest.json is stale: run `npm run build` and commit it');
    process.exit(1);
  }
} else {
  await writeFile(file, text);
}
