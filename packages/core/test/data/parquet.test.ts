import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parquetMetadata, type AsyncBuffer } from 'hyparquet';
import { parquetWriteBuffer, type SchemaElement } from 'hyparquet-writer';
import { bytesFromValue, openDataset, readParquetDataset, type DatasetRecord, type RowGroupInfo } from '@multimeditron/core';

const PH = '<|reserved_special_token_0|>';
let dir: string;

async function collect(it: AsyncIterable<DatasetRecord>): Promise<DatasetRecord[]> {
  const out: DatasetRecord[] = [];
  for await (const r of it) out.push(r);
  return out;
}

/** Hugging Face datasets layout: modalities = list<struct<type: string, value: struct<bytes: binary, path: string>>>. */
const STRUCT_SCHEMA: SchemaElement[] = [
  { name: 'root', num_children: 4 },
  { name: 'id', type: 'INT32', repetition_type: 'REQUIRED' },
  { name: 'text', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  { name: 'conversations', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
  { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  { name: 'modalities', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
  { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
  { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
  { name: 'type', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
  { name: 'value', repetition_type: 'OPTIONAL', num_children: 2 },
  { name: 'bytes', type: 'BYTE_ARRAY', repetition_type: 'OPTIONAL' },
  { name: 'path', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
];

/** Deterministic fake image bytes for row i (includes bytes that are not valid UTF-8). */
const imageBytes = (i: number) => Uint8Array.from({ length: 16 + i }, (_, k) => (k * 37 + i * 11 + 0x80) & 0xff);

interface Row {
  id: number;
  text: string | null;
  conversations: Array<{ role: string; content: string }> | null;
  modalities: Array<{ type: string; value: { bytes: Uint8Array | null; path: string | null } }> | null;
}

function rows(n: number): Row[] {
  return Array.from({ length: n }, (_, i): Row => {
    if (i === 4) return { id: i, text: `${PH} ${PH}`, conversations: null, modalities: [{ type: 'image', value: { bytes: imageBytes(i), path: null } }] };
    if (i === 6) return { id: i, text: `on disk ${PH}`, conversations: null, modalities: [{ type: 'image', value: { bytes: null, path: 'img.png' } }] };
    if (i % 2 === 1) {
      return {
        id: i, text: null,
        conversations: [{ role: 'user', content: `${PH} row ${i}?` }, { role: 'assistant', content: `answer ${i}` }],
        modalities: [{ type: 'image', value: { bytes: imageBytes(i), path: `orig-${i}.png` } }],
      };
    }
    return { id: i, text: `text row ${i} ${PH}`, conversations: null, modalities: [{ type: 'image', value: { bytes: imageBytes(i), path: null } }] };
  });
}

function writeStruct(data: Row[], rowGroupSize: number): ArrayBuffer {
  const cols = ['id', 'text', 'conversations', 'modalities'] as const;
  return parquetWriteBuffer({
    columnData: cols.map((name) => ({ name, data: data.map((r) => r[name]) })),
    schema: STRUCT_SCHEMA,
    rowGroupSize,
  });
}

/** An AsyncBuffer over memory that records every byte range read. */
function trackedBuffer(buf: ArrayBuffer): { file: AsyncBuffer; reads: Array<[number, number]> } {
  const reads: Array<[number, number]> = [];
  return {
    reads,
    file: {
      byteLength: buf.byteLength,
      slice(start: number, end?: number) {
        reads.push([start, end ?? buf.byteLength]);
        return buf.slice(start, end);
      },
    },
  };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-parquet-'));
  await fs.writeFile(path.join(dir, 'img.png'), 'png');
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('struct {bytes, path} values come back as Uint8Array bytes; rows, conversations and errors are right', async () => {
  const data = rows(10);
  const file = path.join(dir, 'train.parquet');
  await fs.writeFile(file, Buffer.from(writeStruct(data, 3)));
  const groups: RowGroupInfo[] = [];
  const recs = await collect(openDataset(file, { modalityTypes: ['image'], onRowGroup: (g) => groups.push(g) }));
  expect(groups).toEqual([
    { index: 0, rowStart: 0, rowEnd: 3, count: 4 }, { index: 1, rowStart: 3, rowEnd: 6, count: 4 },
    { index: 2, rowStart: 6, rowEnd: 9, count: 4 }, { index: 3, rowStart: 9, rowEnd: 10, count: 4 },
  ]);
  expect(recs.map((r) => [r.index, r.line])).toEqual(data.map((_, i) => [i, i + 1]));
  for (const [i, r] of recs.entries()) {
    expect(r.baseDir).toBe(dir);
    if (i === 4) {
      expect(r.error?.kind).toBe('placeholder-count');
      expect(r.error?.message).toBe(`${file}:5: 2 placeholder(s) ${PH} in the text but 1 modality`);
      continue;
    }
    expect(r.error).toBeUndefined();
    const s = r.sample!;
    expect(s['id']).toBe(i);
    expect(s.modalities.length).toBe(1);
    const value = s.modalities[0]!.value as { bytes: Uint8Array | null; path: string | null };
    if (i === 6) {
      expect(value).toEqual({ bytes: null, path: 'img.png' });
      continue;
    }
    expect(value.bytes).toBeInstanceOf(Uint8Array);
    expect(Array.from(value.bytes!)).toEqual(Array.from(imageBytes(i)));
    expect(Array.from(bytesFromValue(value))).toEqual(Array.from(imageBytes(i))); // what raw-* loaders receive
    if (i % 2 === 1) {
      expect(s.text).toBeUndefined();
      expect(s.conversations).toEqual(data[i]!.conversations);
      expect(value.path).toBe(`orig-${i}.png`);
    } else {
      expect(s.conversations).toBeUndefined();
      expect(s.text).toBe(`text row ${i} ${PH}`);
    }
  }
});

test('streams row group by row group: a record arrives before any byte of a later group is read', async () => {
  const buf = writeStruct(rows(12), 4);
  const meta = parquetMetadata(buf);
  expect(meta.row_groups.length).toBe(3);
  // byte range of each row group's column chunks
  const ranges = meta.row_groups.map((g) => {
    const starts = g.columns.map((c) => Number(c.meta_data!.dictionary_page_offset ?? c.meta_data!.data_page_offset));
    const ends = g.columns.map((c, k) => starts[k]! + Number(c.meta_data!.total_compressed_size));
    return [Math.min(...starts), Math.max(...ends)] as const;
  });
  const dataEnd = ranges[ranges.length - 1]![1];
  const { file, reads } = trackedBuffer(buf);
  // the footer read (hyparquet fetches the file's tail for the metadata, here the whole small file) happens
  // before the first row group; only the reads after it are data reads
  let metadataReads = -1;
  const dataReads = () => reads.slice(metadataReads);
  const touched = () => new Set(dataReads().filter(([s]) => s < dataEnd).flatMap(([s, e]) => ranges.flatMap(([a, b], g) => (s < b && e > a ? [g] : []))));
  const it = readParquetDataset(file, {
    file: path.join(dir, 'mem.parquet'), checkFiles: false,
    onRowGroup: (g) => {
      if (g.index === 0) metadataReads = reads.length;
    },
  })[Symbol.asyncIterator]();
  for (let g = 0; g < 3; g++) {
    for (let k = 0; k < 4; k++) {
      const { value, done } = await it.next();
      expect(done).toBe(false);
      expect(value!.index).toBe(g * 4 + k);
      // only groups 0..g have been read so far
      expect([...touched()].sort()).toEqual(Array.from({ length: g + 1 }, (_, x) => x));
    }
  }
  expect((await it.next()).done).toBe(true);
  expect(metadataReads).toBeGreaterThan(0);
  expect(dataReads().length).toBeGreaterThanOrEqual(3);
});

test('startIndex skips whole row groups without reading them; limit stops early', async () => {
  const buf = writeStruct(rows(12), 4);
  const { file } = trackedBuffer(buf);
  const groups: number[] = [];
  const recs = await collect(readParquetDataset(file, {
    file: path.join(dir, 'mem.parquet'), checkFiles: false, startIndex: 5, limit: 4, onRowGroup: (g) => groups.push(g.index),
  }));
  expect(recs.map((r) => r.index)).toEqual([5, 6, 7, 8]);
  expect(groups).toEqual([1, 2]);
});

test('a binary value column and JSON-string columns are read too', async () => {
  const schema: SchemaElement[] = [
    { name: 'root', num_children: 2 },
    { name: 'conversations', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
    { name: 'modalities', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
    { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
    { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
    { name: 'type', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
    { name: 'value', type: 'BYTE_ARRAY', repetition_type: 'OPTIONAL' },
  ];
  const conv = [{ role: 'user', content: `${PH} hear this` }, { role: 'assistant', content: 'ok' }];
  const buf = parquetWriteBuffer({
    columnData: [
      { name: 'conversations', data: [JSON.stringify(conv), '{broken'] },
      { name: 'modalities', data: [[{ type: 'audio', value: imageBytes(1) }], []] },
    ],
    schema,
  });
  const file = path.join(dir, 'binary.parquet');
  await fs.writeFile(file, Buffer.from(buf));
  const recs = await collect(openDataset(file));
  expect(recs[0]!.sample!.conversations).toEqual(conv);
  expect(recs[0]!.sample!.modalities[0]!.value).toEqual(imageBytes(1));
  expect(recs[1]!.error?.kind).toBe('format');
  expect(recs[1]!.error?.message).toMatch(/:2: column "conversations" is a string but not valid JSON/);
});

test('a corrupt row group becomes a read error on each of its rows and the next group is still read', async () => {
  const buf = writeStruct(rows(9), 3);
  const meta = parquetMetadata(buf);
  const bytes = new Uint8Array(buf.slice(0));
  for (const c of meta.row_groups[1]!.columns) {
    const at = Number(c.meta_data!.dictionary_page_offset ?? c.meta_data!.data_page_offset);
    bytes.fill(0xff, at, at + 12);
  }
  const file = path.join(dir, 'corrupt.parquet');
  await fs.writeFile(file, bytes);
  const recs = await collect(openDataset(file, { checkFiles: false }));
  expect(recs.map((r) => r.error?.kind ?? 'ok')).toEqual(['ok', 'ok', 'ok', 'read', 'read', 'read', 'ok', 'ok', 'ok']);
  expect(recs[3]!.error!.message).toMatch(/corrupt\.parquet:4: row group 1 cannot be read/);
});

test('a file that is not Parquet is an InputError', async () => {
  const file = path.join(dir, 'bad.parquet');
  await fs.writeFile(file, 'not parquet at all');
  await expect(collect(openDataset(file))).rejects.toThrow(/not a readable Parquet file/);
});
