import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  chooseLoader, countPlaceholders, DatasetError, InputError, ModalityLoaderPool, modalityValueKind, openDataset,
  resolveDatasetPath, SampleError, validateSample, type DatasetRecord, type LoaderOptions, type ModalityInput,
} from '@multimeditron/core';

const PH = '<|reserved_special_token_0|>';
let root: string; // holds outside.png
let dir: string; // the dataset folder

async function collect(it: AsyncIterable<DatasetRecord>): Promise<DatasetRecord[]> {
  const out: DatasetRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-data-'));
  dir = path.join(root, 'ds');
  await fs.mkdir(path.join(dir, 'img'), { recursive: true });
  await fs.writeFile(path.join(dir, 'img', 'a.png'), 'not really a png');
  await fs.writeFile(path.join(dir, 'b.wav'), 'RIFF');
  await fs.writeFile(path.join(root, 'outside.png'), 'x');
});

afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const LINES: Array<[string, unknown]> = [
  ['ok text', { text: `X-ray ${PH}.`, modalities: [{ type: 'image', value: 'img/a.png' }], id: 7 }],
  ['blank', ''],
  ['bad json', '{"text": "oops",'],
  ['neither', { modalities: [] }],
  ['count', { text: `${PH} and ${PH}`, modalities: [{ type: 'image', value: 'img/a.png' }] }],
  ['assistant placeholder', {
    conversations: [{ role: 'user', content: 'Look' }, { role: 'assistant', content: `Here ${PH}` }],
    modalities: [{ type: 'image', value: 'img/a.png' }],
  }],
  ['unknown type', { text: `${PH}`, modalities: [{ type: 'ecg', value: 'img/a.png' }] }],
  ['missing', { text: `${PH}`, modalities: [{ type: 'image', value: 'img/nope.png' }] }],
  ['outside', { text: `${PH}`, modalities: [{ type: 'image', value: '../outside.png' }] }],
  ['ok conversation with bytes', {
    conversations: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: `${PH} and ${PH}?` },
      { role: 'assistant', content: 'Two things.' },
    ],
    modalities: [{ type: 'image', value: { bytes: Buffer.from('png!').toString('base64') } }, { type: 'audio', value: 'b.wav' }],
  }],
  ['ok HF {bytes:null,path}', { text: `${PH}`, modalities: [{ type: 'image', value: { bytes: null, path: 'img/a.png' } }] }],
  ['two errors', {
    text: `${PH} ${PH}`,
    modalities: [{ type: 'image', value: 'img/missing.png' }, { type: 'video', value: 42 }],
  }],
  ['both', { text: 'a', conversations: [{ role: 'user', content: 'b' }], modalities: [] }],
  ['not an object', [1, 2]],
];

async function writeJsonl(name: string, eol = '\n'): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, LINES.map(([, v]) => (typeof v === 'string' ? v : JSON.stringify(v))).join(eol) + eol);
  return file;
}

describe('JSONL', () => {
  test('every record carries its 1-based line, 0-based index, and the right error kind', async () => {
    const file = await writeJsonl('train.jsonl');
    const recs = await collect(openDataset(file, { modalityTypes: ['image', 'audio'] }));
    // blank line 2 is skipped but counted
    expect(recs.map((r) => r.line)).toEqual([1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    expect(recs.map((r) => r.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(recs.map((r) => r.errors?.map((e) => e.kind) ?? 'ok')).toEqual([
      'ok', ['json'], ['format'], ['placeholder-count'], ['placeholder-role', 'placeholder-count'], ['unknown-type'],
      ['missing-file'], ['outside-base'], 'ok', 'ok', ['missing-file', 'unknown-type', 'bad-value'], ['format'], ['format'],
    ]);
    for (const r of recs) {
      expect(r.file).toBe(file);
      expect(r.baseDir).toBe(dir);
      if (r.error) {
        expect(r.error).toBeInstanceOf(DatasetError);
        expect(r.error).toBeInstanceOf(SampleError);
        expect(r.error.line).toBe(r.line);
        expect(r.error.message.startsWith(`${file}:${r.line}: `)).toBe(true);
        expect(r.error).toBe(r.errors![0]);
        expect(r.sample).toBeUndefined();
      }
    }
    const byLine = new Map(recs.map((r) => [r.line, r]));
    expect(byLine.get(1)!.sample).toEqual({ text: `X-ray ${PH}.`, modalities: [{ type: 'image', value: 'img/a.png' }], id: 7 });
    expect(byLine.get(3)!.error!.message).toMatch(/invalid JSON/);
    expect(byLine.get(4)!.error!.message).toMatch(/neither "text" nor "conversations"/);
    expect(byLine.get(5)!.error!.message).toMatch(/2 placeholder\(s\) .* but 1 modality/);
    expect(byLine.get(6)!.error!.message).toMatch(/conversations\[1\] \(assistant\) contains 1 placeholder/);
    expect(byLine.get(7)!.error!.message).toMatch(/unknown modality type "ecg" \(known: image, audio\)/);
    expect(byLine.get(8)!.error!.message).toMatch(/file not found: img\/nope\.png/);
    expect(byLine.get(8)!.error!.modalityIndex).toBe(0);
    expect(byLine.get(9)!.error!.message).toMatch(/resolves outside the dataset folder/);
    expect(byLine.get(12)!.errors!.map((e) => e.modalityIndex)).toEqual([0, 1, 1]);
    expect(byLine.get(12)!.errors![1]!.message).toMatch(/unknown modality type "video"/);
    expect(byLine.get(13)!.error!.message).toMatch(/both "text" and "conversations"/);
    expect(byLine.get(14)!.error!.message).toMatch(/must be a JSON object, got an array/);
  });

  test('CRLF line endings and a BOM are read the same way', async () => {
    const file = path.join(dir, 'crlf.jsonl');
    const body = LINES.map(([, v]) => (typeof v === 'string' ? v : JSON.stringify(v))).join('\r\n');
    await fs.writeFile(file, `\ufeff${body}\r\n`);
    const recs = await collect(openDataset(file, { modalityTypes: ['image', 'audio'] }));
    expect(recs.length).toBe(13);
    expect(recs[0]!.sample?.text).toBe(`X-ray ${PH}.`);
    expect(recs.filter((r) => r.sample).map((r) => r.line)).toEqual([1, 10, 11]);
  });

  test('allowOutsideBase, checkFiles: false, and no type list', async () => {
    const file = await writeJsonl('opts.jsonl');
    const recs = await collect(openDataset(file, { allowOutsideBase: true, checkFiles: false }));
    const kinds = new Map(recs.map((r) => [r.line, r.errors?.map((e) => e.kind)]));
    expect(kinds.get(7)).toBeUndefined(); // ecg accepted without a type list
    expect(kinds.get(8)).toBeUndefined(); // missing file not checked
    expect(kinds.get(9)).toBeUndefined(); // outside allowed
    const checked = await collect(openDataset(file, { allowOutsideBase: true }));
    expect(checked.find((r) => r.line === 9)!.sample).toBeDefined(); // ../outside.png exists
  });

  test('startIndex and limit (resume) skip samples, not lines', async () => {
    const file = await writeJsonl('resume.jsonl');
    const recs = await collect(openDataset(file, { startIndex: 2, limit: 3 }));
    expect(recs.map((r) => [r.index, r.line])).toEqual([[2, 4], [3, 5], [4, 6]]);
  });

  test('a missing dataset or an unknown extension is an InputError', async () => {
    await expect(collect(openDataset(path.join(dir, 'none.jsonl')))).rejects.toThrow(InputError);
    await expect(collect(openDataset(path.join(dir, 'none.jsonl')))).rejects.toThrow(/dataset file not found/);
    await expect(collect(openDataset(path.join(dir, 'data.csv')))).rejects.toThrow(/unsupported dataset extension/);
    const other = path.join(dir, 'lines.txt');
    await fs.writeFile(other, `${JSON.stringify({ text: 'hi' })}\n`);
    expect((await collect(openDataset(other, { format: 'jsonl' })))[0]!.sample).toEqual({ text: 'hi', modalities: [] });
  });
});

describe('validateSample and path rules', () => {
  test('absolute paths inside the folder are fine; outside are refused; the default attachment token is used', async () => {
    const inside = await validateSample({ text: PH, modalities: [{ type: 'image', value: path.join(dir, 'img', 'a.png') }] }, { file: path.join(dir, 'x.jsonl'), line: 1 });
    expect(inside.errors).toEqual([]);
    const outside = await validateSample({ text: PH, modalities: [{ type: 'image', value: path.join(root, 'outside.png') }] }, { file: path.join(dir, 'x.jsonl'), line: 1 });
    expect(outside.errors.map((e) => e.kind)).toEqual(['outside-base']);
    const custom = await validateSample({ text: '<image>', modalities: [{ type: 'image', value: 'img/a.png' }] }, { file: path.join(dir, 'x.jsonl'), line: 1, attachmentToken: '<image>' });
    expect(custom.errors).toEqual([]);
  });

  test('resolveDatasetPath is lexical and refuses ../ escapes', () => {
    expect(resolveDatasetPath('/data/ds', 'a/b.png')).toEqual({ path: '/data/ds/a/b.png', outside: false });
    expect(resolveDatasetPath('/data/ds', 'a/../../x.png').outside).toBe(true);
    expect(resolveDatasetPath('/data/ds', '..').outside).toBe(true);
    expect(resolveDatasetPath('/data/ds', '..foo/x.png').outside).toBe(false);
    expect(resolveDatasetPath('/data/ds', '/etc/passwd').outside).toBe(true);
  });

  test('value kinds and placeholder counting', () => {
    expect(modalityValueKind('a.png')).toEqual({ kind: 'path', path: 'a.png' });
    expect(modalityValueKind('data:image/png;base64,AAAA')).toEqual({ kind: 'bytes' });
    expect(modalityValueKind(new Uint8Array([1]))).toEqual({ kind: 'bytes' });
    expect(modalityValueKind({ bytes: new Uint8Array([1]), path: 'a.png' })).toEqual({ kind: 'bytes' });
    expect(modalityValueKind({ bytes: null, path: 'a.png' })).toEqual({ kind: 'path', path: 'a.png' });
    expect(modalityValueKind([1, 2, 255])).toEqual({ kind: 'bytes' });
    for (const bad of [42, null, '', {}, [1, 300], { bytes: null, path: null }]) expect(modalityValueKind(bad)).toBeUndefined();
    expect(countPlaceholders(`${PH}${PH} x ${PH}`)).toBe(3);
    expect(countPlaceholders('<a><a>', '<a>')).toBe(2);
  });
});

describe('loader choice', () => {
  const ctx = { baseDir: '/data/ds' };

  test('paths go to fs-<type> under the dataset folder, bytes to raw-<type>, {bytes:null,path} becomes the path', () => {
    expect(chooseLoader({ type: 'image', value: 'a.png' }, ctx)).toEqual({
      name: 'fs-image', options: { basePath: '/data/ds', allowOutsideBase: false }, modality: { type: 'image', value: 'a.png' },
    });
    expect(chooseLoader({ type: 'audio', value: { bytes: null, path: 'b.wav' } }, { ...ctx, allowOutsideBase: true })).toEqual({
      name: 'fs-audio', options: { basePath: '/data/ds', allowOutsideBase: true }, modality: { type: 'audio', value: 'b.wav' },
    });
    const bytes = { type: 'image', value: { bytes: new Uint8Array([1, 2]) } };
    expect(chooseLoader(bytes, ctx)).toEqual({ name: 'raw-image', options: {}, modality: bytes });
    expect(() => chooseLoader({ type: 'image', value: 3 }, ctx)).toThrow(TypeError);
  });

  test('a run-config loader entry for the type wins, with its options', () => {
    const loaders = [{ loaderType: 'dicom-image', modalityType: 'image', window: 'lung' }];
    expect(chooseLoader({ type: 'image', value: 'a.dcm' }, { ...ctx, loaders })).toEqual({
      name: 'dicom-image', options: { basePath: '/data/ds', allowOutsideBase: false, window: 'lung' }, modality: { type: 'image', value: 'a.dcm' },
    });
    expect(chooseLoader({ type: 'audio', value: 'a.wav' }, { ...ctx, loaders }).name).toBe('fs-audio');
  });

  test('ModalityLoaderPool creates each loader once and passes the normalised modality', async () => {
    const created: Array<[string, LoaderOptions]> = [];
    const seen: ModalityInput[] = [];
    const pool = new ModalityLoaderPool({
      create: (name: string, options: LoaderOptions = {}) => {
        created.push([name, options]);
        return { options, load: async (m: ModalityInput) => (seen.push(m), `${name}:${String(m.value)}`) } as never;
      },
    });
    expect(await pool.load({ type: 'image', value: 'a.png' }, ctx)).toBe('fs-image:a.png');
    expect(await pool.load({ type: 'image', value: { bytes: null, path: 'b.png' } }, ctx)).toBe('fs-image:b.png');
    await pool.load({ type: 'image', value: new Uint8Array([1]) }, ctx);
    await pool.load({ type: 'image', value: 'c.png' }, { baseDir: '/other' });
    expect(created.map(([n, o]) => `${n}@${o.basePath ?? '-'}`)).toEqual(['fs-image@/data/ds', 'raw-image@-', 'fs-image@/other']);
    expect(seen.map((m) => m.value instanceof Uint8Array ? 'bytes' : m.value)).toEqual(['a.png', 'b.png', 'bytes', 'c.png']);
  });
});
