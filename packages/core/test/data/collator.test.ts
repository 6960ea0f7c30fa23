import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Tokenizer } from '@huggingface/tokenizers';
import {
  Collator, CollatorError, ConfigValidationError, IGNORE_TOKEN_INDEX, ModelLoadError, type CollatedBatch, type Sample,
} from '@multimeditron/core';
import { LLAMA_DIR, referenceTokenizer } from './helpers.js';

const PH = '<|reserved_special_token_0|>';
const IGN = IGNORE_TOKEN_INDEX;

let collator: Collator;
let tok: Tokenizer;
let BOS: number;
let SH: number; // <|start_header_id|>
let EH: number; // <|end_header_id|>
let EOT: number; // <|eot_id|>

/** Ids of a plain text piece, tokenised alone (no special tokens). */
const enc = (s: string): number[] => tok.encode(s, { add_special_tokens: false }).ids;

/** A piece of an expected sequence: ids with their labels. */
interface Piece { ids: number[]; labelled: boolean }
const masked = (...ids: Array<number | number[]>): Piece => ({ ids: ids.flat(), labelled: false });
const learnt = (...ids: Array<number | number[]>): Piece => ({ ids: ids.flat(), labelled: true });
function assemble(pieces: Piece[]): { ids: number[]; labels: number[] } {
  const ids: number[] = [];
  const labels: number[] = [];
  for (const p of pieces) {
    ids.push(...p.ids);
    labels.push(...p.ids.map((id) => (p.labelled ? id : IGN)));
  }
  return { ids, labels };
}
const slots = (n: number): number[] => new Array<number>(n).fill(128002);
const header = (role: string) => [SH, ...enc(role), EH, ...enc('\n\n')];
const row = (b: CollatedBatch, i: number, a: keyof Pick<CollatedBatch, 'inputIds' | 'labels' | 'attentionMask' | 'positionIds'>) =>
  Array.from(b[a].subarray(i * b.seqLength, (i + 1) * b.seqLength));

beforeAll(async () => {
  collator = await Collator.fromFolder(LLAMA_DIR);
  ({ tok } = referenceTokenizer());
  BOS = tok.token_to_id('<|begin_of_text|>')!;
  SH = tok.token_to_id('<|start_header_id|>')!;
  EH = tok.token_to_id('<|end_header_id|>')!;
  EOT = tok.token_to_id('<|eot_id|>')!;
});

const textSample: Sample = {
  text: `A chest X-ray: ${PH} shows no fracture.`,
  modalities: [{ type: 'image', value: 'xray.png' }],
};

const convSample: Sample = {
  conversations: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: `${PH}\nWhat is shown?` },
    { role: 'assistant', content: 'A chest X-ray.' },
    { role: 'user', content: 'Any fracture?' },
    { role: 'assistant', content: 'No.' },
  ],
  modalities: [{ type: 'image', value: 'xray.png' }],
};

/** The expected tokens of convSample with n slots, assembled from separately tokenised pieces. */
function expectedConversation(n: number, wrap: { start?: number[]; end?: number[] } = {}) {
  return assemble([
    masked(BOS, header('system'), enc('Be brief.'), EOT),
    masked(header('user')),
    masked(wrap.start ?? [], slots(n), wrap.end ?? []),
    masked(enc('\nWhat is shown?'), EOT),
    masked(header('assistant')),
    learnt(enc('A chest X-ray.'), EOT),
    masked(header('user'), enc('Any fracture?'), EOT),
    masked(header('assistant')),
    learnt(enc('No.'), EOT),
  ]);
}

describe('tokenizer and placeholder', () => {
  test('the placeholder is the single token 128002 and the reference pieces tokenise as assumed', () => {
    expect(collator.placeholderId).toBe(128002);
    expect(tok.encode(PH, { add_special_tokens: false }).ids).toEqual([128002]);
    expect([BOS, SH, EH, EOT]).toEqual([128000, 128006, 128007, 128009]);
    expect(enc('Hello world')).toEqual([9906, 1917]);
    // a header's "\n\n" and the content that follows it tokenise independently (pre-tokeniser split)
    expect(enc('\n\nA chest X-ray.')).toEqual([...enc('\n\n'), ...enc('A chest X-ray.')]);
    // no pad_token in the Llama 3 config: padding falls back to eos_token <|eot_id|>
    expect(collator.padId).toBe(EOT);
  });

  test('an attachment token that is several tokens is refused', () => {
    expect(() => new Collator(collator.tokenizer, collator.config, { attachmentToken: '<image>' })).toThrow(ConfigValidationError);
  });

  test('fromFiles: a chat_template.jinja file wins over the config; unreadable files are ModelLoadErrors', async () => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-collator-'));
    try {
      const jinja = path.join(tmp, 'chat_template.jinja');
      await fs.writeFile(jinja, "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}");
      const c = await Collator.fromFiles({
        tokenizerJson: path.join(LLAMA_DIR, 'tokenizer.json'), tokenizerConfig: path.join(LLAMA_DIR, 'tokenizer_config.json'), chatTemplateFile: jinja,
      });
      const turns = [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }];
      expect(c.renderConversation(turns)).toBe('[user]hi<|eot_id|>[assistant]yo<|eot_id|>');
      const e = c.encode({ conversations: turns, modalities: [] }, []);
      const exp = assemble([masked(enc('[user]hi'), EOT, enc('[assistant]')), learnt(enc('yo'), EOT)]);
      expect(Array.from(e.inputIds)).toEqual(exp.ids);
      expect(Array.from(e.labels)).toEqual(exp.labels);
      await expect(Collator.fromFiles({ tokenizerJson: path.join(tmp, 'missing.json') })).rejects.toThrow(ModelLoadError);
      await fs.writeFile(path.join(tmp, 'tokenizer.json'), '{"model": 3}');
      await expect(Collator.fromFolder(tmp)).rejects.toThrow(ModelLoadError);
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  });

  test('unknown options are refused with the option path', () => {
    expect(() => new Collator(collator.tokenizer, collator.config, { maxLenght: 3 } as never)).toThrow(/maxLenght/);
    expect(() => new Collator(collator.tokenizer, collator.config, { paddingSide: 'middle' as never })).toThrow(ConfigValidationError);
  });
});

describe('pretraining text', () => {
  test('exact ids, labels, mask and positions; the placeholder expands to numEmbeddings slots', () => {
    const b = collator.collate([{ sample: textSample, numEmbeddings: [4] }]);
    const exp = assemble([
      learnt(BOS, enc('A chest X-ray: ')),
      masked(slots(4)),
      learnt(enc(' shows no fracture.')),
    ]);
    expect(b.batchSize).toBe(1);
    expect(b.seqLength).toBe(exp.ids.length);
    expect(Array.from(b.inputIds)).toEqual(exp.ids);
    expect(Array.from(b.labels)).toEqual(exp.labels);
    expect(Array.from(b.attentionMask)).toEqual(exp.ids.map(() => 1));
    expect(Array.from(b.positionIds)).toEqual(exp.ids.map((_, i) => i));
    const start = 1 + enc('A chest X-ray: ').length;
    expect(b.modalityRanges).toEqual([{ batchIndex: 0, start, end: start + 4, type: 'image', modalityIndex: 0 }]);
    expect(b.truncated).toEqual([false]);
    expect(b.droppedModalities).toEqual([]);
  });

  test('addSpecialTokens: false leaves out <|begin_of_text|>', () => {
    const c = new Collator(collator.tokenizer, collator.config, { addSpecialTokens: false });
    const b = c.collate([{ sample: { text: 'Hello world', modalities: [] }, numEmbeddings: [] }]);
    expect(Array.from(b.inputIds)).toEqual([9906, 1917]);
  });

  test('start/end tokens wrap the slots, per type when configured, and are masked', () => {
    const c = new Collator(collator.tokenizer, collator.config, {
      modalityStartToken: '<|reserved_special_token_1|>',
      modalityEndToken: '<|reserved_special_token_2|>',
      modalityTokens: { audio: { start: '<|reserved_special_token_3|>' } },
    });
    const sample: Sample = {
      text: `Image ${PH} and sound ${PH}.`,
      modalities: [{ type: 'image', value: 'a.png' }, { type: 'audio', value: 'a.wav' }],
    };
    const b = c.collate([{ sample, numEmbeddings: [2, 3] }]);
    const exp = assemble([
      learnt(BOS, enc('Image ')),
      masked(128003, slots(2), 128004),
      learnt(enc(' and sound ')),
      masked(128005, slots(3), 128004),
      learnt(enc('.')),
    ]);
    expect(Array.from(b.inputIds)).toEqual(exp.ids);
    expect(Array.from(b.labels)).toEqual(exp.labels);
    const s0 = 1 + enc('Image ').length + 1;
    const s1 = s0 + 2 + 1 + enc(' and sound ').length + 1;
    expect(b.modalityRanges).toEqual([
      { batchIndex: 0, start: s0, end: s0 + 2, type: 'image', modalityIndex: 0 },
      { batchIndex: 0, start: s1, end: s1 + 3, type: 'audio', modalityIndex: 1 },
    ]);
    for (const r of b.modalityRanges) {
      expect(Array.from(b.inputIds.subarray(r.start, r.end)).every((id) => id === 128002)).toBe(true);
    }
  });
});

describe('instruction samples (chat template)', () => {
  test('exact ids and labels: only assistant contents and their <|eot_id|> are labelled', () => {
    const b = collator.collate([{ sample: convSample, numEmbeddings: [3] }]);
    const exp = expectedConversation(3);
    expect(Array.from(b.inputIds)).toEqual(exp.ids);
    expect(Array.from(b.labels)).toEqual(exp.labels);
    // and the template rendering matches what Transformers' apply_chat_template(tokenize=False) gives
    expect(collator.renderConversation(convSample.conversations!)).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
        `<|start_header_id|>user<|end_header_id|>\n\n${PH}\nWhat is shown?<|eot_id|>` +
        '<|start_header_id|>assistant<|end_header_id|>\n\nA chest X-ray.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nAny fracture?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\nNo.<|eot_id|>',
    );
    const start = 1 + header('system').length + enc('Be brief.').length + 1 + header('user').length;
    expect(b.modalityRanges).toEqual([{ batchIndex: 0, start, end: start + 3, type: 'image', modalityIndex: 0 }]);
    const learntText = tok.decode(Array.from(b.labels).filter((l) => l !== IGN));
    expect(learntText).toBe('A chest X-ray.<|eot_id|>No.<|eot_id|>');
  });

  test('wrapped slots in a conversation', () => {
    const c = new Collator(collator.tokenizer, collator.config, {
      modalityStartToken: '<|reserved_special_token_1|>', modalityEndToken: '<|reserved_special_token_2|>',
    });
    const b = c.collate([{ sample: convSample, numEmbeddings: [2] }]);
    const exp = expectedConversation(2, { start: [128003], end: [128004] });
    expect(Array.from(b.inputIds)).toEqual(exp.ids);
    expect(Array.from(b.labels)).toEqual(exp.labels);
  });

  test('a placeholder in an assistant turn is refused', () => {
    const bad: Sample = {
      conversations: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: `Here: ${PH}` }],
      modalities: [{ type: 'image', value: 'a.png' }],
    };
    expect(() => collator.collate([{ sample: textSample, numEmbeddings: [1] }, { sample: bad, numEmbeddings: [1] }]))
      .toThrow(expect.objectContaining({ batchIndex: 1, code: 'E_COLLATE' }));
  });

  test('a template that does not render prefixes as prefixes is reported, not guessed around', () => {
    const c = new Collator(collator.tokenizer, collator.config, {
      chatTemplate: "{% for m in messages %}{{ m['content'] }}{% if loop.last %}<|eot_id|>{% endif %}{% endfor %}",
    });
    expect(() => c.encode({ conversations: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }], modalities: [] }, []))
      .toThrow(/does not render .* as a prefix/);
  });

  test('without a chat template, conversations are refused with a CollatorError', () => {
    const c = new Collator(collator.tokenizer, {}, { padToken: '<|eot_id|>' });
    expect(() => c.encode(convSample, [1])).toThrow(CollatorError);
  });
});

describe('errors', () => {
  test('numEmbeddings must match the modalities', () => {
    expect(() => collator.collate([{ sample: textSample, numEmbeddings: [] }])).toThrow(expect.objectContaining({ batchIndex: 0 }));
    expect(() => collator.encode(textSample, [0])).toThrow(/positive integer/);
  });

  test('placeholder count must match the modalities', () => {
    expect(() => collator.encode({ text: 'no placeholder', modalities: [{ type: 'image', value: 'a.png' }] }, [2]))
      .toThrow(/0 placeholder token\(s\) \(id 128002\) but 1 modalities/);
  });
});

describe('truncation never cuts a modality block', () => {
  const sample: Sample = {
    text: `Two images: ${PH} then ${PH} end.`,
    modalities: [{ type: 'image', value: 'a.png' }, { type: 'image', value: 'b.png' }],
  };
  const prefix = () => [BOS, ...enc('Two images: ')];
  const middle = () => enc(' then ');

  test('a cut inside the second block stops before it and drops it', () => {
    const first = prefix().length + 5 + middle().length;
    const c = new Collator(collator.tokenizer, collator.config, {
      maxLength: first + 3, modalityStartToken: '<|reserved_special_token_1|>', modalityEndToken: '<|reserved_special_token_2|>',
    });
    const e = c.encode(sample, [3, 6]); // blocks: [start, 3 slots, end] and [start, 6 slots, end]
    expect(e.inputIds.length).toBe(first);
    expect(Array.from(e.inputIds)).toEqual([...prefix(), 128003, 128002, 128002, 128002, 128004, ...middle()]);
    expect(e.truncated).toBe(true);
    expect(e.modalityRanges.map((r) => r.modalityIndex)).toEqual([0]);
    expect(e.droppedModalities).toEqual([{ batchIndex: 0, modalityIndex: 1, type: 'image' }]);
    const b = c.pad([e]);
    expect(b.truncated).toEqual([true]);
    expect(b.droppedModalities).toEqual([{ batchIndex: 0, modalityIndex: 1, type: 'image' }]);
  });

  test('a cut on a block boundary keeps the block; a cut in text keeps every earlier block', () => {
    const upToSecondEnd = prefix().length + 2 + middle().length + 4;
    const exact = new Collator(collator.tokenizer, collator.config, { maxLength: upToSecondEnd }).encode(sample, [2, 4]);
    expect(exact.modalityRanges.map((r) => r.modalityIndex)).toEqual([0, 1]);
    expect(exact.inputIds.length).toBe(upToSecondEnd);
    expect(exact.truncated).toBe(true);
    expect(exact.droppedModalities).toEqual([]);
    const inText = new Collator(collator.tokenizer, collator.config, { maxLength: prefix().length - 1 }).encode(sample, [2, 4]);
    expect(Array.from(inText.inputIds)).toEqual(prefix().slice(0, -1));
    expect(inText.droppedModalities.map((d) => d.modalityIndex)).toEqual([0, 1]);
  });

  test('a block longer than maxLength is dropped whole', () => {
    const e = new Collator(collator.tokenizer, collator.config, { maxLength: prefix().length + 10 }).encode(sample, [50, 1]);
    expect(Array.from(e.inputIds)).toEqual(prefix());
    expect(e.modalityRanges).toEqual([]);
  });
});

describe('batches', () => {
  const text2: Sample = { text: 'Short.', modalities: [] };

  test('a mixed batch keeps its order; right padding with pad id, mask 0, label -100, position 0', () => {
    const items = [
      { sample: convSample, numEmbeddings: [2] },
      { sample: text2, numEmbeddings: [] },
      { sample: textSample, numEmbeddings: [5] },
    ];
    const b = collator.collate(items);
    const singles = items.map((it) => collator.encode(it.sample, it.numEmbeddings));
    expect(b.batchSize).toBe(3);
    expect(b.lengths).toEqual(singles.map((s) => s.inputIds.length));
    expect(b.seqLength).toBe(Math.max(...b.lengths));
    singles.forEach((s, i) => {
      const len = s.inputIds.length;
      const pad = b.seqLength - len;
      expect(row(b, i, 'inputIds')).toEqual([...s.inputIds, ...new Array(pad).fill(EOT)]);
      expect(row(b, i, 'labels')).toEqual([...s.labels, ...new Array(pad).fill(IGN)]);
      expect(row(b, i, 'attentionMask')).toEqual([...new Array(len).fill(1), ...new Array(pad).fill(0)]);
      expect(row(b, i, 'positionIds')).toEqual([...Array.from({ length: len }, (_, k) => k), ...new Array(pad).fill(0)]);
    });
    expect(row(b, 0, 'inputIds').slice(0, b.lengths[0])).toEqual(expectedConversation(2).ids);
    expect(b.modalityRanges.map((r) => [r.batchIndex, r.modalityIndex, r.end - r.start])).toEqual([[0, 0, 2], [2, 0, 5]]);
  });

  test('left padding shifts rows and ranges; padToMultipleOf rounds the length up', () => {
    const c = new Collator(collator.tokenizer, collator.config, { paddingSide: 'left', padToMultipleOf: 16 });
    const b = c.collate([{ sample: text2, numEmbeddings: [] }, { sample: textSample, numEmbeddings: [3] }]);
    const e = c.encode(textSample, [3]);
    expect(b.seqLength % 16).toBe(0);
    expect(b.seqLength).toBeGreaterThanOrEqual(e.inputIds.length);
    const pad = b.seqLength - e.inputIds.length;
    expect(row(b, 1, 'inputIds')).toEqual([...new Array(pad).fill(EOT), ...e.inputIds]);
    expect(row(b, 1, 'positionIds')).toEqual([...new Array(pad).fill(0), ...Array.from({ length: e.inputIds.length }, (_, k) => k)]);
    expect(b.modalityRanges).toEqual([{ ...e.modalityRanges[0]!, batchIndex: 1, start: e.modalityRanges[0]!.start + pad, end: e.modalityRanges[0]!.end + pad }]);
    const r = b.modalityRanges[0]!;
    expect(Array.from(b.inputIds.subarray(b.seqLength + r.start, b.seqLength + r.end))).toEqual([128002, 128002, 128002]);
  });

  test('an empty batch', () => {
    const b = collator.collate([]);
    expect([b.batchSize, b.seqLength, b.inputIds.length]).toEqual([0, 0, 0]);
  });
});
