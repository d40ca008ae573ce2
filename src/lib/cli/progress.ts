/** A spinner on a TTY (ora), silence otherwise or with --json: long-running commands share this. */
import ora, { type Ora } from 'ora';

export interface Progress {
  step(text: string): void;
  succeed(text?: string): void;
  fail(text?: string): void;
  stop(): void;
}

const quiet: Progress = { step() {}, succeed() {}, fail() {}, stop() {} };

export function progress(enabled: boolean, stream: NodeJS.WriteStream = process.stderr): Progress {
  // A terminal that reports no width (a bare pty) sends ora into endless line clearing: stay quiet there.
  if (!enabled || !stream.isTTY || !stream.columns) return quiet;
  let spinner: Ora | undefined;
  return {
    step(text) {
      if (spinner) spinner.text = text;
      else spinner = ora({ text, stream }).start();
    },
    succeed(text) {
      spinner?.succeed(text);
      spinner = undefined;
    },
    fail(text) {
      spinner?.fail(text);
      spinner = undefined;
    },
    stop() {
      spinner?.stop();
      spinner = undefined;
    },
  };
}
