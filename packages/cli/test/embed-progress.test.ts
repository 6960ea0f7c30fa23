import type { EmbeddingProgress } from '@multimeditron/core';
import { createProgressReporter, formatDuration, renderBar } from '../src/internal/progress.js';

class FakeStream {
  text = '';
  constructor(readonly isTTY: boolean, readonly columns = 80) {}
  write(s: string) {
    this.text += s;
    return true;
  }
}

const progress = (over: Partial<Extract<EmbeddingProgress, { type: 'progress' }>> = {}): EmbeddingProgress => ({
  type: 'progress', done: 50, failed: 0, total: 200, skipped: 0, elapsedMs: 10_000, samplesPerSec: 5, etaMs: 30_000, ...over,
});
const start: EmbeddingProgress = { type: 'start', runId: 'abc-def', total: 200, skipped: 100, resumed: true, workers: 2 };
const sampleError = (i: number): EmbeddingProgress => ({
  type: 'sample-error', error: { sampleIndex: i, line: i + 1, code: 'E_INPUT', message: `bad ${i}`, stage: 'load', shard: 0 },
});

describe('embed progress output', () => {
  test('formatDuration', () => {
    expect(formatDuration(0)).toBe('0:00');
    expect(formatDuration(65_000)).toBe('1:05');
    expect(formatDuration(3_723_000)).toBe('1:02:03');
    expect(formatDuration(undefined)).toBe('?');
    expect(formatDuration(Infinity)).toBe('?');
  });

  test('the bar shows the fraction of what is left to do, samples/s, ETA and failures, within the width', () => {
    const line = renderBar(progress({ skipped: 100, done: 50, failed: 2 }) as Extract<EmbeddingProgress, { type: 'progress' }>, 80);
    expect(line).toMatch(/^\[#+-+\]  50% 50\/100 · 5\.0 samples\/s · ETA 0:30 · 2 failed$/);
    expect(line.length).toBeLessThan(80);
    expect(renderBar(progress() as Extract<EmbeddingProgress, { type: 'progress' }>, 40).length).toBeLessThan(40);
    expect(renderBar(progress({ total: undefined, etaMs: undefined }) as Extract<EmbeddingProgress, { type: 'progress' }>, 80)).toBe('embedding 50 · 5.0 samples/s · ETA ?');
  });

  test('auto on a TTY: a redrawn bar, a start line, the first errors above the bar, a newline at the end', () => {
    const s = new FakeStream(true);
    const r = createProgressReporter('auto', s, 0);
    r.onEvent(start);
    r.onEvent(progress({ done: 10 }));
    r.onEvent(sampleError(3));
    r.onEvent(progress({ done: 20 }));
    r.finish();
    expect(s.text).toMatch(/^run abc-def: 200 samples, 100 already done \(resuming\), 2 worker thread\(s\)\n/);
    expect(s.text).toContain('\r[');
    expect(s.text).toMatch(/failed: sample 3 \(line 4\) \[E_INPUT\] bad 3\n/);
    expect(s.text.endsWith('\n')).toBe(true);
    expect(s.text).not.toContain('{');
  });

  test('a TTY shows at most ten errors, then points to errors.jsonl', () => {
    const s = new FakeStream(true);
    const r = createProgressReporter('bar', s, 0);
    for (let i = 0; i < 15; i++) r.onEvent(sampleError(i));
    r.finish();
    expect(s.text.match(/failed: sample/g)).toHaveLength(10);
    expect(s.text).toContain('see errors.jsonl');
  });

  test('auto off a TTY: JSON lines, progress throttled, the last progress flushed at the end', () => {
    const s = new FakeStream(false);
    const r = createProgressReporter('auto', s, 1000);
    r.onEvent(start);
    r.onEvent(progress({ done: 1 }));
    r.onEvent(progress({ done: 2 }));
    r.onEvent(progress({ done: 3 }));
    r.onEvent({ type: 'shard', shard: 0, file: 'shard-00000.safetensors', samples: 3, errors: 0 });
    r.finish();
    const lines = s.text.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.event)).toEqual(['start', 'progress', 'shard', 'progress']);
    expect(lines[1].done).toBe(1);
    expect(lines[3].done).toBe(3);
    expect(lines[0]).toEqual(expect.objectContaining({ runId: 'abc-def', total: 200, time: expect.any(String) }));
  });

  test('none writes nothing', () => {
    const s = new FakeStream(true);
    const r = createProgressReporter('none', s);
    r.onEvent(start);
    r.onEvent(progress());
    r.finish();
    expect(s.text).toBe('');
  });
});
