/**
 * The decoder-only transformer shared by the built-in families: token embeddings, N pre-norm blocks
 * (RMSNorm -> grouped-query attention with rope -> residual, RMSNorm -> gated MLP -> residual), a final
 * RMSNorm and the LM head. Families switch parts on and off (q/k norm, biases, rope type, tied head) through
 * the config; a plugin family subclasses {@link DecoderForCausalLM} and overrides the hooks it needs
 * ({@link DecoderForCausalLM.parameterSpecs}, {@link DecoderForCausalLM.mlp}, ...).
 *
 * Layout: linear weights are kept transposed ([in, out]) so that every projection is a plain matMul (the
 * transposed-B path of tfjs-wasm is 10-20x slower); {@link DecoderForCausalLM.namedWeights} gives them back
 * in the Hugging Face layout.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  matMulTrainable, ConsoleLogger, FLOAT_DTYPES, ModelLoadError, ModelResolver, readJsonFile, SafetensorsCheckpoint, ShapeError,
  writeSafetensors, type Logger, type WritableTensor,
} from '@multimeditron/core';
import { KVCache } from './cache.js';
import { parseDecoderConfig, type DecoderConfig, type DecoderConfigDefaults } from './config.js';
import { ropeInvFreq, ropeTables } from './rope.js';

/** Rows of token ids (or mask values): `number[][]` or one typed array per row. All rows have one length. */
export type IdRows = ReadonlyArray<ArrayLike<number>>;

/** Input of {@link DecoderForCausalLM.forward}. */
export interface DecoderForwardInput {
  /** Token ids [batch][length]; or give {@link inputsEmbeds}. */
  inputIds?: IdRows;
  /** Input embeddings [batch, length, hidden] (e.g. text with modality rows merged in). The caller keeps ownership. */
  inputsEmbeds?: tf.Tensor3D;
  /**
   * 1 for real tokens, 0 for padding, for the new positions only ([batch][length]); the cache remembers the
   * mask of earlier positions. Default: all ones.
   */
  attentionMask?: IdRows;
  /** Position ids [batch][length]. Default: `cumsum(mask) - 1`, continuing from the cache. */
  positionIds?: IdRows;
  /** A cache to read and extend (prefill, then one token at a time). */
  cache?: KVCache;
  /** Which logits to compute: `all` (default), `none`, or the last `n` positions. */
  logits?: 'all' | 'none' | number;
}

/** Output of {@link DecoderForCausalLM.forward}; the caller disposes the tensors. */
export interface DecoderForwardOutput {
  /** Hidden states after the final norm [batch, length, hidden]. */
  hiddenStates: tf.Tensor3D;
  /** Logits [batch, n, vocab] of the requested positions. */
  logits?: tf.Tensor3D;
  /** The position ids used [batch][length]. */
  positionIds: number[][];
}

/** How a parameter is stored and checked when loading. */
export interface ParameterSpec {
  /** Hugging Face checkpoint key (without any outer prefix). */
  key: string;
  /** Shape in the checkpoint (Hugging Face layout: Linear weights are [out, in]). */
  shape: number[];
  /** `linear` weights are kept transposed; everything else as stored. */
  kind: 'linear' | 'tensor';
  /** Absent keys are allowed (e.g. `lm_head.weight` of a tied model). */
  optional?: boolean;
}

/** Where a decoder's weights come from: a checkpoint and the prefix of its keys (`model.` in a MultiMeditron checkpoint). */
export interface WeightSource {
  checkpoint: SafetensorsCheckpoint;
  prefix?: string;
}

/** Options of {@link DecoderForCausalLM.fromPretrained}. */
export interface DecoderLoadOptions {
  /** Resolves hub ids and cached snapshots. Default: a new `ModelResolver()`. */
  resolver?: ModelResolver;
  logger?: Logger;
  /** Load the weights from another checkpoint than the folder's (e.g. a MultiMeditron checkpoint). */
  weights?: WeightSource;
  /** Make the weights trainable (default false: inference). */
  trainable?: boolean;
}

/** Constructor type of a decoder family. */
export interface DecoderClass<D extends DecoderForCausalLM = DecoderForCausalLM> {
  new (config: DecoderConfig, folder?: string): D;
  /** Family defaults for keys absent from config.json. */
  readonly configDefaults?: DecoderConfigDefaults;
  /** See {@link DecoderForCausalLM.fromPretrained}. */
  fromPretrained(nameOrDir: string, options?: DecoderLoadOptions): Promise<D>;
  readonly name: string;
}

/** The `generation_config.json` content (snake_case, as read). */
export type GenerationConfigJSON = Record<string, unknown>;

/** Checkpoint names of one layer's modules (see {@link DecoderForCausalLM.layerKeys}). */
export interface LayerKeys {
  inputNorm: string; postNorm: string;
  q: string; k: string; v: string; o: string;
  qNorm: string; kNorm: string;
  /** Absent for an ungated MLP. */
  gate?: string;
  up: string; down: string;
}

/** What a block needs besides its input: sizes, the additive mask [B, 1, T, Tk], the rope tables [B, T, 1, D], the cache. */
export interface BlockContext {
  B: number;
  T: number;
  attnMask: tf.Tensor4D;
  cos: tf.Tensor4D;
  sin: tf.Tensor4D;
  cache: KVCache | undefined;
}

/** One layer's weights, as used by the forward pass. */
export interface LayerWeights {
  inputNorm: tf.Tensor;
  postNorm: tf.Tensor;
  qT: tf.Tensor2D; kT: tf.Tensor2D; vT: tf.Tensor2D; oT: tf.Tensor2D;
  qB?: tf.Tensor; kB?: tf.Tensor; vB?: tf.Tensor; oB?: tf.Tensor;
  qNorm?: tf.Tensor; kNorm?: tf.Tensor;
  gateT?: tf.Tensor2D; upT: tf.Tensor2D; downT: tf.Tensor2D;
  gateB?: tf.Tensor; upB?: tf.Tensor; downB?: tf.Tensor;
}

/** x W + b with W already [in, out]; `training` uses the product whose gradients stay on the fast kernels. */
function dense(x2d: tf.Tensor2D, wT: tf.Tensor2D, b?: tf.Tensor, training = false): tf.Tensor2D {
  const y = training ? matMulTrainable(x2d, wT) : tf.matMul(x2d, wT);
  return (b ? tf.add(y, b) : y) as tf.Tensor2D;
}

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w. */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  return tf.tidy(() => {
    const variance = tf.mean(tf.square(x), -1, true);
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(variance, eps))), weight);
  });
}

function rowsToArrays(rows: IdRows, what: string): number[][] {
  const out = rows.map((r) => Array.from(r));
  const len = out[0]?.length ?? 0;
  out.forEach((r, b) => {
    if (r.length !== len) throw new ShapeError(`${what}: row ${b} has ${r.length} entries, row 0 has ${len}`);
  });
  return out;
}

/**
 * Base class of decoder families (Llama and Qwen3 are registered subclasses). Load one with
 * `AutoLanguageModel.fromPretrained(dirOrHubId)` or `Family.fromPretrained(dir)`.
 */
export class DecoderForCausalLM {
  /** Family defaults for keys absent from config.json (a subclass overrides). */
  static readonly configDefaults: DecoderConfigDefaults = {};

  /** The parameters by Hugging Face key (linear weights transposed: see {@link ParameterSpec}). */
  readonly params = new Map<string, tf.Variable>();
  /**
   * Training mode: the projections use {@link matMulTrainable}, whose backward stays on tfjs-wasm's fast
   * (XNNPACK) products. Same forward values; a little overhead per call, so off for inference. The trainer sets it.
   */
  training = false;
  /** `generation_config.json` of the folder ({} when absent). */
  generationConfig: GenerationConfigJSON = {};
  /** Per-layer view of {@link params} (set when the weights are bound). */
  protected layerWeights: LayerWeights[] = [];
  private lmHeadT: tf.Tensor2D | undefined;
  private tiedHeadOwned = false;
  private invFreq: Float32Array;
  private rotation: tf.Tensor2D | undefined;

  constructor(
    readonly config: DecoderConfig,
    /** The folder it was loaded from, if any. */
    readonly folder?: string,
  ) {
    this.invFreq = ropeInvFreq(config);
  }

  // ---- loading ---------------------------------------------------------------------------------------

  /**
   * Reads `config.json` (+ `generation_config.json`) of a folder or hub id and the weights (single or sharded
   * safetensors, F32/F16/BF16 upcast to float32). Every key and shape is checked before any tensor is
   * allocated; a missing key or a shape that disagrees with the config is a {@link ModelLoadError} naming the
   * file and key.
   */
  static async fromPretrained<D extends DecoderForCausalLM>(
    this: DecoderClass<D>,
    nameOrDir: string,
    options: DecoderLoadOptions = {},
  ): Promise<D> {
    const resolver = options.resolver ?? new ModelResolver();
    const dir = await resolver.resolve(nameOrDir);
    const config = await readDecoderConfig(dir, this.configDefaults);
    const model = new this(config, dir);
    await model.loadFolder(dir, options);
    return model;
  }

  /** Reads generation_config.json and the weights of `dir` (or of `options.weights`). */
  async loadFolder(dir: string, options: Pick<DecoderLoadOptions, 'weights' | 'trainable' | 'logger'> = {}): Promise<void> {
    this.generationConfig = await readGenerationConfig(dir);
    const source = options.weights ?? { checkpoint: await openCheckpoint(dir) };
    try {
      await this.loadWeights(source, options.trainable ?? false);
    } finally {
      if (!options.weights) await source.checkpoint.close();
    }
  }

  /**
   * Checkpoint names of layer i's modules (without `.weight`/`.bias`). A family with other names overrides
   * this; `gate: undefined` means an ungated MLP (down(act(up(x)))).
   */
  protected layerKeys(i: number): LayerKeys {
    const p = `model.layers.${i}.`;
    return {
      inputNorm: `${p}input_layernorm`, postNorm: `${p}post_attention_layernorm`,
      q: `${p}self_attn.q_proj`, k: `${p}self_attn.k_proj`, v: `${p}self_attn.v_proj`, o: `${p}self_attn.o_proj`,
      qNorm: `${p}self_attn.q_norm`, kNorm: `${p}self_attn.k_norm`,
      gate: `${p}mlp.gate_proj`, up: `${p}mlp.up_proj`, down: `${p}mlp.down_proj`,
    };
  }

  /** Names of the embedding table, the final norm and the LM head (overridable like {@link layerKeys}). */
  protected modelKeys(): { embed: string; norm: string; lmHead: string } {
    return { embed: 'model.embed_tokens.weight', norm: 'model.norm.weight', lmHead: 'lm_head.weight' };
  }

  /** The parameters this family expects, in Hugging Face names and layout. */
  parameterSpecs(): ParameterSpec[] {
    const c = this.config;
    const H = c.hiddenSize;
    const q = c.numAttentionHeads * c.headDim;
    const kv = c.numKeyValueHeads * c.headDim;
    const I = c.intermediateSize;
    const mk = this.modelKeys();
    const specs: ParameterSpec[] = [{ key: mk.embed, shape: [c.vocabSize, H], kind: 'tensor' }];
    const lin = (name: string, out: number, inp: number, bias: boolean) => {
      specs.push({ key: `${name}.weight`, shape: [out, inp], kind: 'linear' });
      if (bias) specs.push({ key: `${name}.bias`, shape: [out], kind: 'tensor' });
    };
    for (let i = 0; i < c.numHiddenLayers; i++) {
      const k = this.layerKeys(i);
      specs.push({ key: `${k.inputNorm}.weight`, shape: [H], kind: 'tensor' }, { key: `${k.postNorm}.weight`, shape: [H], kind: 'tensor' });
      lin(k.q, q, H, c.attentionBias);
      lin(k.k, kv, H, c.attentionBias);
      lin(k.v, kv, H, c.attentionBias);
      lin(k.o, H, q, c.attentionBias);
      if (k.gate) lin(k.gate, I, H, c.mlpBias);
      lin(k.up, I, H, c.mlpBias);
      lin(k.down, H, I, c.mlpBias);
      if (c.qkNorm) {
        specs.push({ key: `${k.qNorm}.weight`, shape: [c.headDim], kind: 'tensor' }, { key: `${k.kNorm}.weight`, shape: [c.headDim], kind: 'tensor' });
      }
    }
    specs.push({ key: mk.norm, shape: [H], kind: 'tensor' });
    if (!c.tieWordEmbeddings) specs.push({ key: mk.lmHead, shape: [c.vocabSize, H], kind: 'linear' });
    return specs;
  }

  /**
   * Loads the weights from a checkpoint. Checks every key, dtype and shape first, so that a bad checkpoint
   * allocates nothing; then reads tensor by tensor.
   */
  async loadWeights(source: WeightSource, trainable = false): Promise<void> {
    const { checkpoint } = source;
    const prefix = source.prefix ?? '';
    const specs = this.parameterSpecs();
    const file = checkpoint.source;
    for (const s of specs) {
      const key = prefix + s.key;
      if (!checkpoint.has(key)) {
        if (s.optional) continue;
        const hint = s.key === this.modelKeys().lmHead ? ' (config.json says tie_word_embeddings: false, so the LM head must be stored)' : '';
        throw new ModelLoadError(file, `missing from the checkpoint${hint}`, key, {
          suggestions: ['Check that every shard listed in model.safetensors.index.json is present and that config.json belongs to these weights.'],
        });
      }
      const info = checkpoint.info(key);
      if (!FLOAT_DTYPES.has(info.dtype)) throw new ModelLoadError(checkpoint.fileOf(key), `dtype ${info.dtype} is not a float type`, key);
      if (info.shape.join() !== s.shape.join()) {
        throw new ModelLoadError(checkpoint.fileOf(key), `shape [${info.shape}] disagrees with config.json, which implies [${s.shape}]`, key);
      }
    }
    this.disposeWeights();
    try {
      for (const s of specs) {
        const key = prefix + s.key;
        if (!checkpoint.has(key)) continue;
        const t = await checkpoint.readTensor(key);
        try {
          const stored = s.kind === 'linear' ? tf.tidy(() => tf.transpose(t)) : t;
          this.params.set(s.key, tf.variable(stored, trainable));
          if (stored !== t) stored.dispose();
        } finally {
          t.dispose();
        }
      }
    } catch (e) {
      this.disposeWeights();
      throw e;
    }
    this.bindWeights();
  }

  /** Builds the per-layer view of {@link params}, the tied head and the rope rotation matrix. */
  protected bindWeights(): void {
    const c = this.config;
    const P = (k: string) => this.params.get(k);
    const R = (k: string) => {
      const v = this.params.get(k);
      if (!v) throw new ModelLoadError(this.folder ?? '<decoder>', 'parameter not loaded', k);
      return v;
    };
    this.layerWeights = [];
    for (let i = 0; i < c.numHiddenLayers; i++) {
      const k = this.layerKeys(i);
      this.layerWeights.push({
        inputNorm: R(`${k.inputNorm}.weight`),
        postNorm: R(`${k.postNorm}.weight`),
        qT: R(`${k.q}.weight`) as tf.Tensor2D,
        kT: R(`${k.k}.weight`) as tf.Tensor2D,
        vT: R(`${k.v}.weight`) as tf.Tensor2D,
        oT: R(`${k.o}.weight`) as tf.Tensor2D,
        upT: R(`${k.up}.weight`) as tf.Tensor2D,
        downT: R(`${k.down}.weight`) as tf.Tensor2D,
        ...(optional('gateT', k.gate ? P(`${k.gate}.weight`) : undefined) as { gateT?: tf.Tensor2D }),
        ...optional('qB', P(`${k.q}.bias`)),
        ...optional('kB', P(`${k.k}.bias`)),
        ...optional('vB', P(`${k.v}.bias`)),
        ...optional('oB', P(`${k.o}.bias`)),
        ...optional('qNorm', c.qkNorm ? P(`${k.qNorm}.weight`) : undefined),
        ...optional('kNorm', c.qkNorm ? P(`${k.kNorm}.weight`) : undefined),
        ...optional('gateB', k.gate ? P(`${k.gate}.bias`) : undefined),
        ...optional('upB', P(`${k.up}.bias`)),
        ...optional('downB', P(`${k.down}.bias`)),
      });
    }
    this.refreshTiedHead();
    if (!this.rotation) this.rotation = this.rotationMatrix();
  }

  /**
   * Recomputes the transposed copy of the embedding table used as LM head when the head is tied (call it after
   * changing `model.embed_tokens.weight`). An untied head is `lm_head.weight` itself.
   */
  refreshTiedHead(): void {
    if (this.tiedHeadOwned) this.lmHeadT?.dispose();
    if (this.config.tieWordEmbeddings) {
      const embed = this.params.get(this.modelKeys().embed)!;
      this.lmHeadT = tf.tidy(() => tf.transpose(embed) as tf.Tensor2D);
      this.tiedHeadOwned = true;
    } else {
      this.lmHeadT = this.params.get(this.modelKeys().lmHead) as tf.Tensor2D;
      this.tiedHeadOwned = false;
    }
  }

  /** The matrix R with x R = rotate_half(x) on the first rotaryDim dims (0 on the others). */
  private rotationMatrix(): tf.Tensor2D {
    const d = this.config.headDim;
    const r = this.config.rotaryDim;
    const half = r / 2;
    const m = new Float32Array(d * d);
    for (let j = 0; j < half; j++) m[(j + half) * d + j] = -1;
    for (let j = half; j < r; j++) m[(j - half) * d + j] = 1;
    return tf.tensor2d(m, [d, d]);
  }

  // ---- forward -------------------------------------------------------------------------------------

  /** A new KV cache for `batchSize` rows. */
  createCache(batchSize: number): KVCache {
    return new KVCache(batchSize, this.config.numHiddenLayers);
  }

  /** The token embedding table [vocab, hidden] (a variable owned by the model). */
  get embedTokens(): tf.Variable {
    const e = this.params.get(this.modelKeys().embed);
    if (!e) throw new ShapeError('the decoder has no weights (disposed, or not loaded)');
    return e;
  }

  /** Token embeddings [batch, length, hidden] of id rows. The caller disposes the result. */
  embed(inputIds: IdRows): tf.Tensor3D {
    const rows = rowsToArrays(inputIds, 'inputIds');
    const B = rows.length;
    const T = rows[0]?.length ?? 0;
    const V = this.config.vocabSize;
    const flat = new Int32Array(B * T);
    rows.forEach((r, b) => r.forEach((id, t) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new ShapeError(`inputIds[${b}][${t}] = ${id} is outside the vocabulary (0..${V - 1})`);
      flat[b * T + t] = id;
    }));
    return tf.tidy(() => tf.reshape(tf.gather(this.embedTokens, tf.tensor1d(flat, 'int32')), [B, T, this.config.hiddenSize]) as tf.Tensor3D);
  }

  /**
   * Runs the decoder. With a cache, the new positions attend to every cached real token and are appended to
   * it. Position ids default to `cumsum(mask) - 1` per row (continuing the cache), so left padding gives each
   * row the positions it would have alone.
   */
  forward(input: DecoderForwardInput): DecoderForwardOutput {
    const c = this.config;
    if (!this.lmHeadT || this.layerWeights.length !== c.numHiddenLayers) throw new ShapeError('the decoder has no weights (disposed, or not loaded)');
    if ((input.inputIds === undefined) === (input.inputsEmbeds === undefined)) {
      throw new ShapeError('forward() takes exactly one of inputIds and inputsEmbeds');
    }
    let B: number;
    let T: number;
    if (input.inputsEmbeds) {
      const e = input.inputsEmbeds;
      if (e.rank !== 3 || e.shape[2] !== c.hiddenSize) throw new ShapeError(`inputsEmbeds must be [batch, length, ${c.hiddenSize}], got [${e.shape}]`);
      [B, T] = [e.shape[0], e.shape[1]];
    } else {
      B = input.inputIds!.length;
      T = input.inputIds![0]?.length ?? 0;
    }
    if (B < 1 || T < 1) throw new ShapeError(`forward() needs at least one row and one position, got [${B}, ${T}]`);
    const mask = input.attentionMask ? rowsToArrays(input.attentionMask, 'attentionMask') : Array.from({ length: B }, () => new Array<number>(T).fill(1));
    if (mask.length !== B || mask[0]!.length !== T) throw new ShapeError(`attentionMask is [${mask.length}, ${mask[0]?.length}], the input is [${B}, ${T}]`);
    const cache = input.cache;
    if (cache && cache.batchSize !== B) throw new ShapeError(`the cache holds ${cache.batchSize} rows, the input ${B}`);
    if (cache?.isDisposed) throw new ShapeError('the KV cache was disposed');
    const past = cache?.length ?? 0;
    const positions = input.positionIds ? rowsToArrays(input.positionIds, 'positionIds') : mask.map((row, b) => {
      let seen = cache?.seen[b] ?? 0;
      return row.map((m) => (m ? seen++ : 1));
    });
    if (positions.length !== B || positions[0]!.length !== T) throw new ShapeError('positionIds must have the shape of the input');
    const maxPos = Math.max(...positions.flat());
    if (maxPos >= c.maxPositionEmbeddings) {
      throw new ShapeError(`position ${maxPos} is beyond max_position_embeddings (${c.maxPositionEmbeddings})`);
    }

    // additive attention mask [B, 1, T, past+T]: query t of row b sees key k iff k <= past + t and k is a real token
    const Tk = past + T;
    const maskData = new Float32Array(B * T * Tk);
    for (let b = 0; b < B; b++) {
      const valid = [...(cache?.keyMask[b] ?? []), ...mask[b]!];
      for (let t = 0; t < T; t++) {
        const rowOff = (b * T + t) * Tk;
        for (let k = 0; k < Tk; k++) maskData[rowOff + k] = k <= past + t && valid[k] ? 0 : -1e9;
      }
    }
    const { cos, sin } = ropeTables(this.invFreq, positions.flat());
    const D = c.headDim;
    const cosFull = this.fullRope(cos, c.rotaryDim, D, 1);
    const sinFull = this.fullRope(sin, c.rotaryDim, D, 0);

    const keep = input.logits ?? 'all';
    const out = tf.tidy(() => {
      let x: tf.Tensor3D = input.inputsEmbeds ? input.inputsEmbeds.clone() : this.embed(input.inputIds!);
      const attnMask = tf.tensor4d(maskData, [B, 1, T, Tk]);
      const cosT = tf.tensor4d(cosFull, [B, T, 1, D]);
      const sinT = tf.tensor4d(sinFull, [B, T, 1, D]);
      for (let i = 0; i < c.numHiddenLayers; i++) {
        x = this.block(i, x, { B, T, attnMask, cos: cosT, sin: sinT, cache });
      }
      const hidden = rmsNorm(x, this.param(this.modelKeys().norm), c.rmsNormEps) as tf.Tensor3D;
      let logits: tf.Tensor3D | undefined;
      if (keep !== 'none') {
        const n = keep === 'all' ? T : Math.min(Math.max(1, Math.floor(keep)), T);
        const h = n === T ? hidden : tf.slice(hidden, [0, T - n, 0], [B, n, c.hiddenSize]);
        logits = tf.reshape(tf.matMul(tf.reshape(h, [B * n, c.hiddenSize]) as tf.Tensor2D, this.lmHeadT!), [B, n, c.vocabSize]) as tf.Tensor3D;
      }
      return logits ? { hiddenStates: hidden, logits } : { hiddenStates: hidden };
    });
    cache?.commit(mask);
    return { ...out, positionIds: positions };
  }

  /**
   * Logits of hidden rows [n, hidden] -> [n, vocab], differentiable with respect to the head: a tied head whose
   * embedding table is trainable is computed from the table itself (so training sees both uses), otherwise the
   * stored head is used. The caller disposes the result.
   */
  headLogits(hidden: tf.Tensor2D): tf.Tensor2D {
    if (!this.lmHeadT) throw new ShapeError('the decoder has no weights (disposed, or not loaded)');
    return tf.tidy(() => {
      const mm = this.training ? matMulTrainable : (a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D => tf.matMul(a, b);
      if (this.config.tieWordEmbeddings && this.embedTokens.trainable) return mm(hidden, tf.transpose(this.embedTokens) as tf.Tensor2D);
      return mm(hidden, this.lmHeadT!);
    });
  }

  /** Expands a [n, rotaryDim] table to [n, headDim], filling the non-rotary dims with `fill`. */
  private fullRope(table: Float32Array, r: number, d: number, fill: number): Float32Array {
    if (r === d) return table;
    const n = table.length / r;
    const out = new Float32Array(n * d).fill(fill);
    for (let p = 0; p < n; p++) out.set(table.subarray(p * r, (p + 1) * r), p * d);
    return out;
  }

  /** Applies rope to [B, T, heads, D]. */
  protected applyRope(x: tf.Tensor4D, cos: tf.Tensor4D, sin: tf.Tensor4D): tf.Tensor4D {
    const D = this.config.headDim;
    const rotated = tf.reshape(tf.matMul(tf.reshape(x, [-1, D]) as tf.Tensor2D, this.rotation!), x.shape);
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
  }

  /** One transformer block (called inside the forward tidy). */
  protected block(
    i: number,
    x: tf.Tensor3D,
    ctx: BlockContext,
  ): tf.Tensor3D {
    const c = this.config;
    const L = this.layerWeights[i]!;
    const { B, T } = ctx;
    const H = c.hiddenSize;
    const attnIn = tf.reshape(rmsNorm(x, L.inputNorm, c.rmsNormEps), [B * T, H]) as tf.Tensor2D;
    const attn = this.attention(i, attnIn, ctx);
    const h = tf.add(x, tf.reshape(attn, [B, T, H])) as tf.Tensor3D;
    const mlpIn = tf.reshape(rmsNorm(h, L.postNorm, c.rmsNormEps), [B * T, H]) as tf.Tensor2D;
    return tf.add(h, tf.reshape(this.mlp(i, mlpIn), [B, T, H])) as tf.Tensor3D;
  }

  /** Grouped-query self-attention of one layer on [B*T, hidden] -> [B*T, hidden]. */
  protected attention(
    i: number,
    x: tf.Tensor2D,
    ctx: BlockContext,
  ): tf.Tensor2D {
    const c = this.config;
    const L = this.layerWeights[i]!;
    const { B, T } = ctx;
    const nH = c.numAttentionHeads;
    const nKV = c.numKeyValueHeads;
    const D = c.headDim;
    const g = nH / nKV;
    let q = tf.reshape(dense(x, L.qT, L.qB, this.training), [B, T, nH, D]) as tf.Tensor4D;
    let k = tf.reshape(dense(x, L.kT, L.kB, this.training), [B, T, nKV, D]) as tf.Tensor4D;
    const v = tf.reshape(dense(x, L.vT, L.vB, this.training), [B, T, nKV, D]) as tf.Tensor4D;
    if (L.qNorm && L.kNorm) {
      q = rmsNorm(q, L.qNorm, c.rmsNormEps) as tf.Tensor4D;
      k = rmsNorm(k, L.kNorm, c.rmsNormEps) as tf.Tensor4D;
    }
    q = this.applyRope(q, ctx.cos, ctx.sin);
    k = this.applyRope(k, ctx.cos, ctx.sin);
    // query head h uses kv head floor(h / g): [B, T, nH, D] -> [B, nKV, g*T, D]
    const qh = tf.reshape(tf.transpose(tf.mul(q, 1 / Math.sqrt(D)), [0, 2, 1, 3]), [B * nKV, g * T, D]) as tf.Tensor3D;
    let kT = tf.transpose(k, [0, 2, 3, 1]) as tf.Tensor4D; // [B, nKV, D, T]
    let vh = tf.transpose(v, [0, 2, 1, 3]) as tf.Tensor4D; // [B, nKV, T, D]
    if (ctx.cache) ({ kT, v: vh } = ctx.cache.append(i, kT, vh));
    const Tk = kT.shape[3];
    // [B*nKV, g*T, Tk] is [B, nH, T, Tk]: the [B, 1, T, Tk] mask broadcasts over the heads
    const scores = tf.add(tf.reshape(tf.matMul(qh, tf.reshape(kT, [B * nKV, D, Tk]) as tf.Tensor3D), [B, nH, T, Tk]), ctx.attnMask);
    const probs = tf.reshape(tf.softmax(scores, -1), [B * nKV, g * T, Tk]) as tf.Tensor3D;
    const o = tf.matMul(probs, tf.reshape(vh, [B * nKV, Tk, D]) as tf.Tensor3D); // [B*nKV, g*T, D] = [B, nH, T, D]
    const merged = tf.reshape(tf.transpose(tf.reshape(o, [B, nH, T, D]), [0, 2, 1, 3]), [B * T, nH * D]) as tf.Tensor2D;
    return dense(merged, L.oT, L.oB, this.training);
  }

  /** The activation of the MLP (`hidden_act`), on [n, intermediate]. Layer i is given for families with per-layer parameters. */
  protected activation(_i: number, x: tf.Tensor2D): tf.Tensor2D {
    switch (this.config.hiddenAct) {
      case 'silu': return tf.mul(x, tf.sigmoid(x));
      case 'gelu': return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
      case 'gelu_pytorch_tanh':
        return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI)))));
    }
  }

  /** The MLP of one layer: down(act(gate(x)) * up(x)), or down(act(up(x))) without a gate. */
  protected mlp(i: number, x: tf.Tensor2D): tf.Tensor2D {
    const L = this.layerWeights[i]!;
    const up = dense(x, L.upT, L.upB, this.training);
    const h = L.gateT ? tf.mul(this.activation(i, dense(x, L.gateT, L.gateB, this.training)), up) : this.activation(i, up);
    return dense(h as tf.Tensor2D, L.downT, L.downB, this.training);
  }

  /** A loaded parameter by checkpoint key (linear weights transposed); for families' own hooks. */
  protected param(key: string): tf.Variable {
    const v = this.params.get(key);
    if (!v) throw new ShapeError(`parameter ${key} is not loaded`);
    return v;
  }

  // ---- saving, training hooks, disposal -------------------------------------------------------------

  /** The weights in Hugging Face names and layout (linear weights transposed back). The caller disposes. */
  namedWeights(): Map<string, tf.Tensor> {
    const specs = new Map(this.parameterSpecs().map((s) => [s.key, s]));
    const out = new Map<string, tf.Tensor>();
    for (const [k, v] of this.params) out.set(k, specs.get(k)?.kind === 'linear' ? tf.tidy(() => tf.transpose(v)) : v.clone());
    return out;
  }

  /** Every parameter variable (linear weights in the transposed layout). */
  variables(): tf.Variable[] {
    return [...this.params.values()];
  }

  /** Sets `trainable` on every parameter. */
  setTrainable(trainable: boolean): void {
    for (const v of this.params.values()) v.trainable = trainable;
  }

  /**
   * Writes `config.json`, `generation_config.json` and `model.safetensors` (float32 unless `dtype` says
   * otherwise) in the Hugging Face layout, loadable by transformers.
   */
  async savePretrained(dir: string, options: { dtype?: 'F32' | 'F16' | 'BF16' } = {}): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'config.json'), `${JSON.stringify(this.config.raw, null, 2)}\n`);
    await fs.writeFile(path.join(dir, 'generation_config.json'), `${JSON.stringify(this.generationConfig, null, 2)}\n`);
    await writeSafetensors(path.join(dir, 'model.safetensors'), this.hostWeights('', options.dtype), { format: 'pt' });
  }

  /** The weights as host tensors under `prefix + key` (for writing checkpoints). */
  hostWeights(prefix = '', dtype: 'F32' | 'F16' | 'BF16' = 'F32'): Map<string, WritableTensor> {
    const out = new Map<string, WritableTensor>();
    const named = this.namedWeights();
    for (const [k, t] of named) {
      out.set(prefix + k, { data: t.dataSync() as Float32Array, shape: [...t.shape], dtype });
      t.dispose();
    }
    return out;
  }

  private disposeWeights(): void {
    if (this.tiedHeadOwned) this.lmHeadT?.dispose();
    this.lmHeadT = undefined;
    this.tiedHeadOwned = false;
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
    this.layerWeights = [];
  }

  /** Releases every tensor of the model. */
  dispose(): void {
    this.disposeWeights();
    this.rotation?.dispose();
    this.rotation = undefined;
  }
}

function optional<K extends string>(key: K, v: tf.Tensor | undefined): Partial<Record<K, tf.Tensor>> {
  return v ? ({ [key]: v } as Record<K, tf.Tensor>) : {};
}

/** Opens the checkpoint of a folder: `model.safetensors` or the sharded index. */
export async function openCheckpoint(dir: string): Promise<SafetensorsCheckpoint> {
  try {
    return await SafetensorsCheckpoint.open(dir);
  } catch (e) {
    if (e instanceof ModelLoadError) throw e;
    throw new ModelLoadError(dir, (e as Error).message, undefined, { cause: e });
  }
}

/** Reads and validates `config.json` of a decoder folder. */
export async function readDecoderConfig(dir: string, defaults: DecoderConfigDefaults = {}): Promise<DecoderConfig> {
  const file = path.join(dir, 'config.json');
  return parseDecoderConfig(await readJsonFile(file), file, defaults);
}

/** Reads `generation_config.json` of a folder ({} when absent). */
export async function readGenerationConfig(dir: string): Promise<GenerationConfigJSON> {
  const file = path.join(dir, 'generation_config.json');
  if (!(await fs.access(file).then(() => true, () => false))) return {};
  const json = await readJsonFile(file);
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ModelLoadError(file, 'must hold a JSON object');
  return json as GenerationConfigJSON;
}

/** The default logger of this package. */
export const defaultLogger = (): Logger => new ConsoleLogger();
