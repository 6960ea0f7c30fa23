import { promises as fs, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parquetWriteBuffer, type SchemaElement } from 'hyparquet-writer';
import { run } from '@multimeditron/cli';
import { golden, REPO_ROOT } from '../../../test/helpers/fixtures.js';
import { runCli } from './helpers.js';

const PH = '<|reserved_special_token_0|>';
const LLAMA_DIR = path.join(REPO_ROOT, 'node_modules', '@lenml', 'tokenizer-llama3_1', 'models');

let tmp: string;
let ds: string; // dataset folder
let plugin: string; // throwaway plugin package

/** Runs the CLI in-process; returns the exit code and what it printed (process.exitCode left clean for jest). */
async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const write = process.stdout.write;
  const writeErr = process.stderr.write;
  let out = '';
  let err = '';
  process.stdout.write = ((s: string | Uint8Array) => ((out += String(s)), true)) as typeof process.stdout.write;
  process.stderr.write = ((s: string | Uint8Array) => ((err += String(s)), true)) as typeof process.stderr.write;
  try {
    const code = await run(argv);
    return { code, out, err };
  } finally {
    process.stdout.write = write;
    process.stderr.write = writeErr;
    process.exitCode = undefined;
  }
}

/**
 * A throwaway plugin (plain ESM, decorators called directly) for modality type "blob":
 * - `fs-blob` reads a file and fails (InputError) when it starts with "BAD";
 * - `raw-blob` takes bytes and fails when the first byte is 0;
 * - `small-blob` (for run configs) reads a file and fails when it is longer than `maxBytes`;
 * - modality `test_blob` (config and processor only matter for run-config validation).
 */
const PLUGIN_SOURCE = `
import { promises as fs, writeFileSync } from 'node:fs';
import {
  BASE_MODALITY_CONFIG_SCHEMA, BaseModality, BaseModalityConfig, BaseModalityLoader, BaseModalityProcessor,
  InputError, RegisterLoader, RegisterModality, bytesFromValue, definePlugin, extendSchema,
} from '@multimeditron/core';

class BlobConfig extends BaseModalityConfig {
  static schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: { modelType: { const: 'test_blob', default: 'test_blob' }, modalityType: { const: 'blob', default: 'blob' } },
  });
}
class BlobProcessor extends BaseModalityProcessor {
  process(m) { throw new Error('not used'); }
}
class BlobModality extends BaseModality {
  async load() {}
  embedBatch() { throw new Error('not used'); }
  encoderVariables() { return new Map(); }
}
RegisterModality('test_blob', { config: BlobConfig, processor: BlobProcessor })(BlobModality);

class FsBlobLoader extends BaseModalityLoader {
  async load(modality) {
    const file = this.resolvePath(modality.value);
    const text = await fs.readFile(file, 'utf8').catch((e) => { throw new InputError(file, 'cannot read: ' + e.code); });
    if (text.startsWith('BAD')) throw new InputError(file, 'corrupt blob');
    return text;
  }
}
RegisterLoader('fs-blob', { modalityType: 'blob' })(FsBlobLoader);

class RawBlobLoader extends BaseModalityLoader {
  async load(modality) {
    const bytes = bytesFromValue(modality.value);
    if (bytes[0] === 0) throw new InputError('<bytes>', 'blob bytes start with 0');
    return bytes;
  }
}
RegisterLoader('raw-blob', { modalityType: 'blob' })(RawBlobLoader);

class SmallBlobLoader extends BaseModalityLoader {
  async load(modality) {
    const file = this.resolvePath(modality.value);
    const st = await fs.stat(file);
    if (st.size > this.options.maxBytes) throw new InputError(file, 'larger than ' + this.options.maxBytes + ' bytes');
    return file;
  }
}
RegisterLoader('small-blob', { modalityType: 'blob' })(SmallBlobLoader);

export default definePlugin({
  name: 'mm-check-test-plugin', version: '1.0.0', apiVersion: 1,
  modalities: [BlobModality], loaders: [FsBlobLoader, RawBlobLoader, SmallBlobLoader],
});
`;

const line = (v: unknown) => JSON.stringify(v);

beforeAll(async () => {
  tmp = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), 'mm-check-')));
  ds = path.join(tmp, 'ds');
  await fs.mkdir(path.join(ds, 'files'), { recursive: true });
  await fs.writeFile(path.join(ds, 'files', 'good.blob'), 'hello');
  await fs.writeFile(path.join(ds, 'files', 'bad.blob'), 'BAD data');
  await fs.writeFile(path.join(tmp, 'outside.blob'), 'x');
  await fs.copyFile(golden('images', 'tiny_12x9.png'), path.join(ds, 'files', 'tiny.png'));
  await fs.copyFile(golden('images', 'truncated.jpg'), path.join(ds, 'files', 'truncated.jpg'));
  plugin = path.join(tmp, 'plugin');
  await fs.mkdir(plugin);
  await fs.writeFile(path.join(plugin, 'package.json'), line({
    name: 'mm-check-test-plugin', version: '1.0.0', type: 'module', main: 'index.js', multimeditron: { plugin: true, apiVersion: 1 },
  }));
  await fs.writeFile(path.join(plugin, 'index.js'), PLUGIN_SOURCE);

  await fs.writeFile(path.join(ds, 'mixed.jsonl'), [
    line({ text: `ok ${PH}`, modalities: [{ type: 'blob', value: 'files/good.blob' }] }),
    '{"text": broken',
    line({ text: `two ${PH}${PH}`, modalities: [{ type: 'blob', value: 'files/good.blob' }] }),
    '',
    line({ text: `${PH}`, modalities: [{ type: 'blob', value: 'files/missing.blob' }] }),
    line({ text: `${PH}`, modalities: [{ type: 'ecg', value: 'files/good.blob' }] }),
    line({ text: `${PH}`, modalities: [{ type: 'blob', value: '../outside.blob' }] }),
    line({ conversations: [{ role: 'user', content: 'q' }, { role: 'assistant', content: `a ${PH}` }], modalities: [{ type: 'blob', value: 'files/good.blob' }] }),
    line({ text: `corrupt ${PH}`, modalities: [{ type: 'blob', value: 'files/bad.blob' }] }),
    line({ text: `bytes ${PH}`, modalities: [{ type: 'blob', value: { bytes: Buffer.from('abc').toString('base64') } }] }),
    line({ text: `zero bytes ${PH}`, modalities: [{ type: 'blob', value: { bytes: [0, 1, 2] } }] }),
  ].join('\n'));
  await fs.writeFile(path.join(ds, 'clean.jsonl'), [
    line({ text: `fine ${PH}`, modalities: [{ type: 'blob', value: 'files/good.blob' }] }),
    line({ conversations: [{ role: 'user', content: `${PH} what?` }, { role: 'assistant', content: 'that' }], modalities: [{ type: 'blob', value: 'files/good.blob' }] }),
    line({ text: 'no attachment', modalities: [] }),
  ].join('\n'));
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('multimeditron check-dataset', () => {
  test('reports every bad sample as file:line: message, a summary, and exits 1', async () => {
    const file = path.join(ds, 'mixed.jsonl');
    const r = await cli('check-dataset', file, '--modality-types', 'blob,image');
    expect(r.code).toBe(1);
    const lines = r.out.trim().split('\n');
    const errors = lines.filter((l) => l.startsWith(`${file}:`));
    expect(errors.map((l) => Number(l.slice(file.length + 1).split(':')[0]))).toEqual([2, 3, 5, 6, 7, 8, 8]);
    expect(errors[0]).toMatch(/:2: invalid JSON/);
    expect(errors[1]).toMatch(/:3: 2 placeholder\(s\) .* but 1 modality/);
    expect(errors[2]).toMatch(/:5: modalities\[0\]: file not found: files\/missing\.blob/);
    expect(errors[3]).toMatch(/:6: modalities\[0\]: unknown modality type "ecg" \(known: blob, image\)/);
    expect(errors[4]).toMatch(/:7: modalities\[0\]: path \.\.\/outside\.blob resolves outside the dataset folder/);
    expect(errors[5]).toMatch(/:8: conversations\[1\] \(assistant\) contains 1 placeholder/);
    expect(errors[6]).toMatch(/:8: 0 placeholder\(s\) .* in the user turns but 1 modality/);
    expect(r.out).toMatch(/mixed\.jsonl: 10 samples, 4 ok, 6 failed\n/);
    expect(r.out).toMatch(/errors by kind: .*json 1/);
    expect(r.out).toMatch(/placeholder-count 2/);
    expect(r.out).toMatch(/modality types checked: blob, image/);
  });

  test('--json prints one JSON line per error and a summary with counts by kind', async () => {
    const file = path.join(ds, 'mixed.jsonl');
    const r = await cli('check-dataset', file, '--modality-types', 'blob', '--json', '--allow-outside');
    expect(r.code).toBe(1);
    const objs = r.out.trim().split('\n').map((l) => JSON.parse(l));
    const errors = objs.filter((o) => o.type === 'error');
    const summary = objs[objs.length - 1];
    expect(errors.map((e) => [e.line, e.index, e.kind])).toEqual([
      [2, 1, 'json'], [3, 2, 'placeholder-count'], [5, 3, 'missing-file'], [6, 4, 'unknown-type'],
      [8, 6, 'placeholder-role'], [8, 6, 'placeholder-count'],
    ]);
    expect(errors[2]).toEqual({
      type: 'error', file, line: 5, index: 3, kind: 'missing-file', modalityIndex: 0,
      message: `modalities[0]: file not found: files/missing.blob (resolved to ${path.join(ds, 'files', 'missing.blob')})`,
    });
    expect(summary).toEqual({
      type: 'summary', file, format: 'jsonl', samples: 10, ok: 5, failed: 5,
      errors: { json: 1, 'placeholder-count': 2, 'missing-file': 1, 'unknown-type': 1, 'placeholder-role': 1 },
      modalities: { blob: 5 }, loaded: false, modalityTypes: ['blob'],
    });
  });

  test('--load runs the plugin loaders: fs-<type> for paths under the dataset folder, raw-<type> for bytes', async () => {
    const file = path.join(ds, 'mixed.jsonl');
    const r = await cli('check-dataset', file, '--plugins', plugin, '--load', '--json');
    expect(r.code).toBe(1);
    const objs = r.out.trim().split('\n').map((l) => JSON.parse(l));
    const summary = objs.pop();
    const load = objs.filter((o) => o.kind === 'load');
    expect(load.map((e) => [e.line, e.modalityIndex])).toEqual([[9, 0], [11, 0]]);
    expect(load[0].message).toMatch(/^modalities\[0\] \(blob\): .*bad\.blob: corrupt blob$/);
    expect(load[1].message).toBe('modalities[0] (blob): <bytes>: blob bytes start with 0');
    // modality types default to those the plugins register
    expect(summary.modalityTypes).toEqual(['blob']);
    expect(summary).toMatchObject({ samples: 10, ok: 2, failed: 8, loaded: true, modalities: { blob: 2 } });
    expect(objs.find((o) => o.line === 6).message).toMatch(/unknown modality type "ecg" \(known: blob\)/);
  });

  test('--load with no loader for a type reports a load error per modality, not a crash', async () => {
    const file = path.join(ds, 'other.jsonl');
    await fs.writeFile(file, `${line({ text: `${PH}`, modalities: [{ type: 'ecg', value: 'files/good.blob' }] })}\n`);
    const r = await cli('check-dataset', file, '--plugins', plugin, '--modality-types', 'ecg', '--load');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/other\.jsonl:1: modalities\[0\] \(ecg\): Unknown loader "fs-ecg"\. Registered: fs-blob, raw-blob, small-blob/);
  });

  test('a clean dataset exits 0', async () => {
    const r = await cli('check-dataset', path.join(ds, 'clean.jsonl'), '--plugins', plugin, '--load');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/clean\.jsonl: 3 samples, 3 ok, 0 failed \(loaders run\)/);
    expect(r.out).toMatch(/modalities in valid samples: blob 2/);
  });

  test('Parquet with {bytes} values, checked and loaded', async () => {
    const schema: SchemaElement[] = [
      { name: 'root', num_children: 2 },
      { name: 'text', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      { name: 'modalities', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
      { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
      { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
      { name: 'type', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      { name: 'value', repetition_type: 'OPTIONAL', num_children: 2 },
      { name: 'bytes', type: 'BYTE_ARRAY', repetition_type: 'OPTIONAL' },
      { name: 'path', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
    ];
    const blob = (bytes: number[] | null, p: string | null) => [{ type: 'blob', value: { bytes: bytes && Uint8Array.from(bytes), path: p } }];
    const buf = parquetWriteBuffer({
      columnData: [
        { name: 'text', data: [`a ${PH}`, `b ${PH}`, `c ${PH}`, 'd', `e ${PH}`] },
        { name: 'modalities', data: [blob([1, 2], null), blob([0, 9], 'zero.bin'), blob(null, 'files/good.blob'), [], blob(null, 'files/bad.blob')] },
      ],
      schema,
      rowGroupSize: 2,
    });
    const file = path.join(ds, 'train.parquet');
    await fs.writeFile(file, Buffer.from(buf));
    const r = await cli('check-dataset', file, '--plugins', plugin, '--load');
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/train\.parquet:2: modalities\[0\] \(blob\): <bytes>: blob bytes start with 0/);
    expect(r.out).toMatch(/train\.parquet:5: modalities\[0\] \(blob\): .*bad\.blob: corrupt blob/);
    expect(r.out).toMatch(/train\.parquet: 5 samples, 3 ok, 2 failed \(loaders run\)/);
  });

  test('--config: the run config supplies plugins, loaders (with options), modality types and dataset settings', async () => {
    const big = path.join(ds, 'sizes.jsonl');
    await fs.writeFile(big, [
      line({ text: PH, modalities: [{ type: 'blob', value: 'files/good.blob' }] }), // 5 bytes
      line({ text: PH, modalities: [{ type: 'blob', value: 'files/bad.blob' }] }), // 8 bytes
      line({ text: PH, modalities: [{ type: 'blob', value: '../outside.blob' }] }), // outside, allowed by the config
      line({ text: '<att>', modalities: [{ type: 'blob', value: 'files/good.blob' }] }),
    ].join('\n'));
    const cfg = path.join(tmp, 'run.json');
    await fs.writeFile(cfg, line({
      plugins: [plugin],
      modalities: [{ modelType: 'test_blob', hiddenSize: 8 }],
      loaders: [{ loaderType: 'small-blob', modalityType: 'blob', maxBytes: 6 }],
      tokenizer: { path: LLAMA_DIR },
      dataset: { allowOutsideBase: true },
    }));
    const r = await cli('check-dataset', big, '--config', cfg, '--load', '--json');
    const objs = r.out.trim().split('\n').map((l) => JSON.parse(l));
    const summary = objs.pop();
    expect(objs.map((o) => [o.line, o.kind])).toEqual([[2, 'load'], [4, 'placeholder-count']]);
    expect(objs[0].message).toMatch(/larger than 6 bytes/);
    expect(summary).toMatchObject({ samples: 4, ok: 2, failed: 2, modalityTypes: ['blob'] });
    expect(r.code).toBe(1);
    // the attachment token flag wins over the config's default
    const r2 = await cli('check-dataset', big, '--config', cfg, '--attachment-token', '<att>', '--json');
    expect(r2.out.trim().split('\n').map((l) => JSON.parse(l)).filter((o) => o.type === 'error').map((o) => o.line)).toEqual([1, 2, 3]);
  });

  test('usage errors exit 2: missing file, unknown extension or format, bad run config, unknown option', async () => {
    const missing = await cli('check-dataset', path.join(ds, 'nope.jsonl'), '--modality-types', 'blob');
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/dataset file not found/);
    const csv = path.join(ds, 'x.csv');
    await fs.writeFile(csv, 'a,b\n');
    const ext = await cli('check-dataset', csv, '--modality-types', 'blob');
    expect(ext.code).toBe(2);
    expect(ext.err).toMatch(/unsupported dataset extension/);
    expect((await cli('check-dataset', csv, '--format', 'csv')).code).toBe(2);
    const badCfg = path.join(tmp, 'bad-run.json');
    await fs.writeFile(badCfg, line({ modalities: [] }));
    const cfg = await cli('check-dataset', path.join(ds, 'clean.jsonl'), '--config', badCfg);
    expect(cfg.code).toBe(2);
    expect(cfg.err).toMatch(/bad-run\.json/);
    expect((await cli('check-dataset', path.join(ds, 'clean.jsonl'), '--no-such-flag')).code).toBe(2);
    expect((await cli('check-dataset')).code).toBe(2);
  });

  test('--max-errors limits the printed lines but not the counts', async () => {
    const r = await cli('check-dataset', path.join(ds, 'mixed.jsonl'), '--modality-types', 'blob', '--max-errors', '2');
    expect(r.out.split('\n').filter((l) => l.startsWith(`${path.join(ds, 'mixed.jsonl')}:`)).length).toBe(2);
    expect(r.out).toMatch(/10 samples, 4 ok, 6 failed/);
    expect(r.out).toMatch(/\(2 error lines printed; --max-errors 2\)/);
  });

  test('the built CLI with the image plugin: fs-image decodes real images and reports a truncated JPEG', () => {
    const file = path.join(ds, 'images.jsonl');
    writeFileSync(file, [
      line({ text: `${PH} a tiny image`, modalities: [{ type: 'image', value: 'files/tiny.png' }] }),
      line({ text: `${PH} a truncated one`, modalities: [{ type: 'image', value: 'files/truncated.jpg' }] }),
    ].join('\n'));
    const r = runCli(['check-dataset', file, '--plugins', '@multimeditron/plugin-image', '--load'], { cwd: REPO_ROOT });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/images\.jsonl:2: modalities\[0\] \(image\): .*truncated\.jpg/);
    expect(r.stdout).toMatch(/images\.jsonl: 2 samples, 1 ok, 1 failed \(loaders run\)/);
  });
});
