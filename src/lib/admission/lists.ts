/**
 * The static allow and deny lists: key files (re-read when they change and on reload) plus the keys
 * given inline in the config file. A bad file is refused and the list in use is kept.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { describeError } from '../errors.js';
import type { Logger } from '../util/logger.js';
import { LIST_WATCH_DEBOUNCE_MS } from './constants.js';
import { keySetOf, loadKeyList } from './keylist.js';
import type { AdmissionSettings } from './types.js';

type Which = 'allow' | 'deny';

interface ListState {
  file: string | null;
  inline: Set<string>;
  fromFile: Set<string>;
  /** union of both */
  keys: Set<string>;
}

function union(a: Set<string>, b: Set<string>): Set<string> {
  if (a.size === 0) return b;
  if (b.size === 0) return a;
  return new Set([...a, ...b]);
}

export type ListsSettings = Pick<AdmissionSettings, 'allowKeysFile' | 'denyKeysFile' | 'allowKeys' | 'denyKeys'>;

export class StaticLists {
  private lists: Record<Which, ListState>;
  private readonly watchers = new Map<string, FSWatcher>();
  private readonly timers = new Map<Which, NodeJS.Timeout>();
  private closed = false;
  /** Successful re-reads after a file change (tests wait on it). */
  private onChange: ((which: Which, ok: boolean) => void) | undefined;

  private constructor(lists: Record<Which, ListState>, private readonly logger: Logger) {
    this.lists = lists;
  }

  /** Reads the files and checks the inline keys; throws KeyListError. */
  static async load(s: ListsSettings, logger: Logger): Promise<StaticLists> {
    const l = new StaticLists(await StaticLists.read(s), logger);
    l.rewatch();
    return l;
  }

  private static async read(s: ListsSettings): Promise<Record<Which, ListState>> {
    const one = async (file: string | null, inline: readonly string[], field: string): Promise<ListState> => {
      const inl = keySetOf(inline, field);
      const fromFile = file === null ? new Set<string>() : await loadKeyList(file);
      return { file, inline: inl, fromFile, keys: union(fromFile, inl) };
    };
    const [allow, deny] = await Promise.all([one(s.allowKeysFile, s.allowKeys, 'admission.allowKeys'), one(s.denyKeysFile, s.denyKeys, 'admission.denyKeys')]);
    return { allow, deny };
  }

  /** New settings (reload): everything re-read; on error nothing changes and the error is thrown. */
  async reload(s: ListsSettings): Promise<void> {
    const next = await StaticLists.read(s);
    this.lists = next;
    this.rewatch();
  }

  isDenied(keyText: string): boolean {
    return this.lists.deny.keys.has(keyText);
  }

  isAllowed(keyText: string): boolean {
    return this.lists.allow.keys.has(keyText);
  }

  /** An allow list is configured: a file (even an empty one) or at least one inline key. */
  get allowListPresent(): boolean {
    return this.lists.allow.file !== null || this.lists.allow.inline.size > 0;
  }

  get sizes(): { allowKeys: number; denyKeys: number } {
    return { allowKeys: this.lists.allow.keys.size, denyKeys: this.lists.deny.keys.size };
  }

  /** Test hook: called after each watched re-read. */
  setChangeListener(fn: ((which: Which, ok: boolean) => void) | undefined): void {
    this.onChange = fn;
  }

  /** Watches the directories of the configured files (editors and `mv` replace files, so not the file). */
  private rewatch(): void {
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    if (this.closed) return;
    for (const which of ['allow', 'deny'] as const) {
      const file = this.lists[which].file;
      if (file === null) continue;
      const dir = dirname(file);
      const name = basename(file);
      try {
        const w = watch(dir, { persistent: false }, (_event, changed) => {
          if (changed !== null && changed.toString() !== name) return;
          this.schedule(which);
        });
        w.on('error', (err) => this.logger.log('warn', 'key list watch failed; changes apply on reload', { file, reason: describeError(err) }));
        this.watchers.set(`${which}:${dir}`, w);
      } catch (err) {
        this.logger.log('warn', 'cannot watch key list; changes apply on reload', { file, reason: describeError(err) });
      }
    }
  }

  private schedule(which: Which): void {
    const t = this.timers.get(which);
    if (t !== undefined) clearTimeout(t);
    this.timers.set(
      which,
      setTimeout(() => {
        this.timers.delete(which);
        void this.reread(which);
      }, LIST_WATCH_DEBOUNCE_MS),
    );
  }

  private async reread(which: Which): Promise<void> {
    const cur = this.lists[which];
    if (cur.file === null || this.closed) return;
    const file = cur.file;
    try {
      const fromFile = await loadKeyList(file);
      // A reload may have replaced the list meanwhile.
      if (this.closed || this.lists[which].file !== file) return;
      const keys = union(fromFile, this.lists[which].inline);
      const before = this.lists[which].keys.size;
      this.lists = { ...this.lists, [which]: { ...this.lists[which], fromFile, keys } };
      this.logger.log('info', `${which} list re-read`, { file, keys: keys.size, before });
      this.onChange?.(which, true);
    } catch (err) {
      this.logger.log('error', `${which} list refused, keeping the one in use`, { file, reason: describeError(err) });
      this.onChange?.(which, false);
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
