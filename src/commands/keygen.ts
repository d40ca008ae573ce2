import { Command, Flags } from '@oclif/core';
import { NodePrivateKey } from '../lib/protocol/keys.js';
import { writeKeyFile } from '../lib/keys/keyfile.js';
import { describeError } from '../lib/errors.js';

/** Version marker of the --json document (schemas/keygen.schema.json). */
export const KEYGEN_SCHEMA_ID = 'derp.keygen/v1';

/** The key file exists (without --force) or cannot be written. */
const EXIT_FILE = 2;

export default class Keygen extends Command {
  static override description = `Generate a node key and write it as a derper-compatible key file (mode 0600)

Exit codes: 0 written (or printed); 2 bad usage, or the file exists (without --force) or cannot be written.`;
  static override examples = ['<%= config.bin %> keygen --out client.key', '<%= config.bin %> keygen --json'];
  static override enableJsonFlag = true;
  static override flags = {
    out: Flags.string({ char: 'o', description: 'key file to write; without it the private key is only printed' }),
    force: Flags.boolean({ description: 'overwrite an existing key file' }),
  };

  async run(): Promise<{ schema: typeof KEYGEN_SCHEMA_ID; publicKey: string; privateKey?: string; file?: string }> {
    const { flags } = await this.parse(Keygen);
    const key = NodePrivateKey.generate();
    if (flags.out) {
      try {
        await writeKeyFile(flags.out, key, flags.force);
      } catch (err) {
        this.error(describeError(err), { exit: EXIT_FILE });
      }
      this.log(key.publicText());
      return { schema: KEYGEN_SCHEMA_ID, publicKey: key.publicText(), file: flags.out };
    }
    this.log(key.toText());
    this.log(key.publicText());
    return { schema: KEYGEN_SCHEMA_ID, publicKey: key.publicText(), privateKey: key.toText() };
  }
}
