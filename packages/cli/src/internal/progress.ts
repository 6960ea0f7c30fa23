/**
 * Progress output of `embed`: a one-line bar on a TTY, JSON lines otherwise. Both go to stderr, so that stdout
 * holds only the final summary.
 * @module
 */
import type { EmbeddingProgress } from '@multimeditron/core';

/** How progress is shown. `auto` = `bar` when stderr is a TTY, else `json`. */
export type ProgressMode = 'auto' | 'bar' | 'json' | 'none';

/** The modes accepted by `--progress`. */
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'bar', 'json', 'none'];

/** A writable with the bits of a TTY stream the renderer uses. */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Receives run events and draws them. */
export interface ProgressReporter {
  onEvent(event: EmbeddingProgress): void;
  /** Ends the output (the bar's line is completed). */
  finish(): void;
}

/** `1:05`, `1:02:03`, or `?`. */
export function formatDuration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '?';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** The text of the bar line for a progress event, fitted to `width` columns. */
export function renderBar(e: Extract<EmbeddingProgress, { type: 'progress' }>, width: number): string {
  const todo = e.total === undefined ? undefined : Math.max(0, e.total - e.skipped);
  const frac = todo ? Math.min(1, e.done / todo) : undefined;
  const counts = todo === undefined ? `${e.done}` : `${e.done}/${todo}`;
  const tail = ` ${frac === undefined ? '' : `${String(Math.floor(frac * 100)).padStart(3)}% `}${counts} · ${e.samplesPerSec.toFixed(1)} samples/s · ETA ${formatDuration(e.etaMs)}${e.failed ? ` · ${e.failed} failed` : ''}`;
  if (frac === undefined) return `embedding${tail}`.slice(0, width - 1);
  return fitBar(frac, tail, width, 40);
}

/** `[####----]` for `frac` followed by `tail`, the bar at most `maxBar` wide, the line cut to `width - 1` columns. */
export function fitBar(frac: number, tail: string, width: number, maxBar: number): string {
  const barWidth = Math.max(10, Math.min(maxBar, width - tail.length - 3));
  const full = Math.round(frac * barWidth);
  return `[${'#'.repeat(full)}${'-'.repeat(barWidth - full)}]${tail}`.slice(0, width - 1);
}

/** Builds the reporter for a mode. `bar` redraws at most every `intervalMs`; `json` writes progress lines at most that often. */
export function createProgressReporter(mode: ProgressMode, stream: ProgressStream, intervalMs = 100): ProgressReporter {
  const resolved = mode === 'auto' ? (stream.isTTY ? 'bar' : 'json') : mode;
  if (resolved === 'none') return { onEvent: () => undefined, finish: () => undefined };
  if (resolved === 'json') {
    let last = 0;
    let pending: EmbeddingProgress | undefined;
    const line = (e: EmbeddingProgress) => stream.write(`${JSON.stringify({ event: e.type, time: new Date().toISOString(), ...strip(e) })}\n`);
    return {
      onEvent(e) {
        if (e.type === 'progress') {
          const now = Date.now();
          if (now - last < Math.max(intervalMs, 1000)) {
            pending = e;
            return;
          }
          last = now;
          pending = undefined;
        }
        line(e);
      },
      finish() {
        if (pending) line(pending);
        pending = undefined;
      },
    };
  }
  let drawn = '';
  let last = 0;
  let latest: Extract<EmbeddingProgress, { type: 'progress' }> | undefined;
  let errorsShown = 0;
  const MAX_ERRORS = 10;
  const clear = () => {
    if (drawn) stream.write(`\r${' '.repeat(drawn.length)}\r`);
    drawn = '';
  };
  const draw = () => {
    if (!latest) return;
    const text = renderBar(latest, stream.columns ?? 80);
    stream.write(`\r${text}${drawn.length > text.length ? ' '.repeat(drawn.length - text.length) : ''}`);
    drawn = text;
  };
  return {
    onEvent(e) {
      if (e.type === 'start') {
        clear();
        stream.write(`run ${e.runId}: ${e.total ?? '?'} samples${e.skipped ? `, ${e.skipped} already done (resuming)` : ''}, ${e.workers ? `${e.workers} worker thread(s)` : 'in the main thread'}\n`);
      } else if (e.type === 'sample-error') {
        if (errorsShown < MAX_ERRORS) {
          clear();
          stream.write(`failed: sample ${e.error.sampleIndex} (line ${e.error.line}) [${e.error.code}] ${e.error.message}\n`);
          draw();
        } else if (errorsShown === MAX_ERRORS) {
          clear();
          stream.write('failed: more samples failed; see errors.jsonl\n');
          draw();
        }
        errorsShown++;
      } else if (e.type === 'progress') {
        latest = e;
        const now = Date.now();
        if (now - last >= intervalMs) {
          last = now;
          draw();
        }
      }
    },
    finish() {
      draw();
      if (drawn) stream.write('\n');
      drawn = '';
    },
  };
}

function strip(e: EmbeddingProgress): Record<string, unknown> {
  const { type: _t, ...rest } = e;
  if ('samplesPerSec' in rest) (rest as Record<string, unknown>)['samplesPerSec'] = Math.round(rest.samplesPerSec * 100) / 100;
  if ('etaMs' in rest && rest.etaMs !== undefined) (rest as Record<string, unknown>)['etaMs'] = Math.round(rest.etaMs);
  return rest;
}
