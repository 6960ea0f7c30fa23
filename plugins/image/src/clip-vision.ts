/**
 * The CLIP vision tower (Hugging Face `CLIPVisionModel`) on tfjs: configuration, checkpoint loading and the
 * forward pass.
 *
 * Checkpoints are Hugging Face folders in either form:
 * - `CLIPModel`: `config.json` with `model_type: "clip"` and a nested `vision_config`; the text tower,
 *   `logit_scale` and the integer `position_ids` buffers in `model.safetensors` are ignored;
 * - `CLIPVisionModel` / `CLIPVisionModelWithProjection`: a flat config with `model_type: "clip_vision_model"`.
 *
 * Weights may be stored as F32, F16 or BF16 (upcast to float32 on load). Tensor names are Hugging Face's,
 * under `vision_model.` (a checkpoint saved without that prefix is accepted too), plus the optional
 * `visual_projection.weight`.
 *
 * The forward pass follows `modeling_clip.py`: patch embedding (a stride-`patch` convolution without bias,
 * computed as one matrix product over the patches), class token, position embeddings, `pre_layrnorm`, pre-LN
 * encoder layers, `post_layernorm` on the class token only for `pooler_output`, and
 * `image_embeds = visual_projection(pooler_output)` (not L2-normalised).
 * @module
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { gelu, ModelLoadError, readJsonFile, SafetensorsCheckpoint, ShapeError, FLOAT_DTYPES } from '@multimeditron/core';

/** Activations of the MLP blocks that CLIP checkpoints use. */
export type ClipActivation = 'quick_gelu' | 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'gelu_fast' | 'relu';
const ACTIVATIONS: readonly ClipActivation[] = ['quick_gelu', 'gelu', 'gelu_new', 'gelu_pytorch_tanh', 'gelu_fast', 'relu'];

/** The vision tower's hyper-parameters (Hugging Face `CLIPVisionConfig`, camel-cased). */
export interface ClipVisionConfig {
  /** Token width (`hidden_size`). */
  hiddenSize: number;
  /** MLP width (`intermediate_size`; read from the config, not assumed to be 4x). */
  intermediateSize: number;
  /** Encoder layers (`num_hidden_layers`). */
  numHiddenLayers: number;
  /** Attention heads (`num_attention_heads`); must divide `hiddenSize`. */
  numAttentionHeads: number;
  /** Input channels (`num_channels`, 3). */
  numChannels: number;
  /** Input size in pixels (`image_size`). */
  imageSize: number;
  /** Patch size in pixels (`patch_size`); must divide `imageSize`. */
  patchSize: number;
  /** MLP activation (`hidden_act`). */
  hiddenAct: ClipActivation;
  /** LayerNorm epsilon (`layer_norm_eps`). */
  layerNormEps: number;
  /** Size of `image_embeds` (the visual projection), when the checkpoint has one. */
  projectionDim?: number;
}

/** Which Hugging Face class the checkpoint folder was saved from. */
export type ClipCheckpointForm = 'CLIPModel' | 'CLIPVisionModel';

/** Hugging Face's `CLIPVisionConfig` defaults (ViT-B/32). */
export const CLIP_VISION_DEFAULTS: Readonly<ClipVisionConfig> = Object.freeze({
  hiddenSize: 768,
  intermediateSize: 3072,
  numHiddenLayers: 12,
  numAttentionHeads: 12,
  numChannels: 3,
  imageSize: 224,
  patchSize: 32,
  hiddenAct: 'quick_gelu',
  layerNormEps: 1e-5,
});

/** The `model_type`s of the checkpoints this module loads. */
export const CLIP_MODEL_TYPES = ['clip', 'clip_vision_model'] as const;

/**
 * Parses a CLIP `config.json` (either form) into the vision tower's config. `file` names the file in errors
 * ({@link ModelLoadError} with the offending key).
 */
export function parseClipVisionConfig(json: unknown, file = 'config.json'): { config: ClipVisionConfig; form: ClipCheckpointForm } {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ModelLoadError(file, 'config must be a JSON object');
  const root = json as Record<string, unknown>;
  const modelType = root['model_type'];
  let v: Record<string, unknown>;
  let form: ClipCheckpointForm;
  if (modelType === 'clip') {
    const nested = root['vision_config'] ?? root['vision_config_dict'] ?? {};
    if (typeof nested !== 'object' || nested === null || Array.isArray(nested)) {
      throw new ModelLoadError(file, 'vision_config must be an object', 'vision_config');
    }
    v = nested as Record<string, unknown>;
    form = 'CLIPModel';
  } else if (modelType === 'clip_vision_model') {
    v = root;
    form = 'CLIPVisionModel';
  } else {
    throw new ModelLoadError(
      file,
      `model_type ${JSON.stringify(modelType)} is not a CLIP checkpoint (expected one of ${CLIP_MODEL_TYPES.join(', ')})`,
      'model_type',
    );
  }
  const int = (key: string, def: number): number => {
    const x = v[key] ?? def;
    if (!Number.isInteger(x) || (x as number) <= 0) throw new ModelLoadError(file, `must be a positive integer, got ${JSON.stringify(x)}`, key);
    return x as number;
  };
  const d = CLIP_VISION_DEFAULTS;
  const act = v['hidden_act'] ?? d.hiddenAct;
  if (!ACTIVATIONS.includes(act as ClipActivation)) {
    throw new ModelLoadError(file, `unsupported activation ${JSON.stringify(act)} (supported: ${ACTIVATIONS.join(', ')})`, 'hidden_act');
  }
  const eps = v['layer_norm_eps'] ?? d.layerNormEps;
  if (typeof eps !== 'number' || !(eps > 0)) throw new ModelLoadError(file, 'must be a positive number', 'layer_norm_eps');
  const config: ClipVisionConfig = {
    hiddenSize: int('hidden_size', d.hiddenSize),
    intermediateSize: int('intermediate_size', d.intermediateSize),
    numHiddenLayers: int('num_hidden_layers', d.numHiddenLayers),
    numAttentionHeads: int('num_attention_heads', d.numAttentionHeads),
    numChannels: int('num_channels', d.numChannels),
    imageSize: int('image_size', d.imageSize),
    patchSize: int('patch_size', d.patchSize),
    hiddenAct: act as ClipActivation,
    layerNormEps: eps,
  };
  const proj = root['projection_dim'] ?? v['projection_dim'];
  if (Number.isInteger(proj)) config.projectionDim = proj as number;
  if (config.hiddenSize % config.numAttentionHeads !== 0) {
    throw new ModelLoadError(file, `hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`, 'num_attention_heads');
  }
  if (config.imageSize % config.patchSize !== 0) {
    throw new ModelLoadError(file, `image_size ${config.imageSize} is not divisible by patch_size ${config.patchSize}`, 'patch_size');
  }
  return { config, form };
}

/** Reads and parses `<dir>/config.json`. */
export async function readClipVisionConfig(dir: string): Promise<{ config: ClipVisionConfig; form: ClipCheckpointForm }> {
  const file = path.join(dir, 'config.json');
  return parseClipVisionConfig(await readJsonFile(file), file);
}

/** Number of patch tokens (without the class token): `(imageSize / patchSize)^2`. */
export function numPatches(config: Pick<ClipVisionConfig, 'imageSize' | 'patchSize'>): number {
  return (config.imageSize / config.patchSize) ** 2;
}

/** Every tensor name the vision tower needs, with its expected shape (canonical `vision_model.` names). */
export function clipVisionWeightShapes(c: ClipVisionConfig): Map<string, number[]> {
  const D = c.hiddenSize;
  const m = new Map<string, number[]>();
  const p = 'vision_model.';
  m.set(`${p}embeddings.class_embedding`, [D]);
  m.set(`${p}embeddings.patch_embedding.weight`, [D, c.numChannels, c.patchSize, c.patchSize]);
  m.set(`${p}embeddings.position_embedding.weight`, [numPatches(c) + 1, D]);
  m.set(`${p}pre_layrnorm.weight`, [D]);
  m.set(`${p}pre_layrnorm.bias`, [D]);
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const l = `${p}encoder.layers.${i}.`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      m.set(`${l}self_attn.${n}.weight`, [D, D]);
      m.set(`${l}self_attn.${n}.bias`, [D]);
    }
    for (const n of ['layer_norm1', 'layer_norm2']) {
      m.set(`${l}${n}.weight`, [D]);
      m.set(`${l}${n}.bias`, [D]);
    }
    m.set(`${l}mlp.fc1.weight`, [c.intermediateSize, D]);
    m.set(`${l}mlp.fc1.bias`, [c.intermediateSize]);
    m.set(`${l}mlp.fc2.weight`, [D, c.intermediateSize]);
    m.set(`${l}mlp.fc2.bias`, [D]);
  }
  m.set(`${p}post_layernorm.weight`, [D]);
  m.set(`${p}post_layernorm.bias`, [D]);
  return m;
}

/** The name of the optional projection to `image_embeds`. */
export const VISUAL_PROJECTION_KEY = 'visual_projection.weight';

/** Options of {@link ClipVisionEncoder.forward}. */
export interface ClipForwardOptions {
  /** Also return `hiddenStates` (embeddings after `pre_layrnorm`, then every layer's output). */
  outputHiddenStates?: boolean;
  /** Compute `poolerOutput` (and `imageEmbeds`). Default true. */
  pooled?: boolean;
  /**
   * Attention implementation. `batched`: one batched matmul over [b, heads, n, headDim]. `per-head`: one 2-D
   * product per (image, head), which the wasm backend runs on XNNPACK (its batched kernel is a generic loop,
   * about 10x slower); faster from ~100 tokens on (ViT-B/16: 197 tokens). `auto` (default) picks per-head
   * above {@link PER_HEAD_MIN_TOKENS} tokens. Trainable attention weights always use `batched`.
   */
  attention?: 'auto' | 'batched' | 'per-head';
}

/** Token count from which `auto` attention switches to the per-head implementation. */
export const PER_HEAD_MIN_TOKENS = 100;

/** Outputs of {@link ClipVisionEncoder.forward}; the caller owns (and disposes) every tensor. */
export interface ClipVisionOutput {
  /** [b, 1 + patches, hiddenSize], the last layer's output (no post layer norm). */
  lastHiddenState: tf.Tensor3D;
  /** [b, hiddenSize]: `post_layernorm` of the class token. */
  poolerOutput?: tf.Tensor2D;
  /** [b, projectionDim]: `visual_projection(poolerOutput)`, when the checkpoint has a visual projection. */
  imageEmbeds?: tf.Tensor2D;
  /** `numHiddenLayers + 1` tensors like `lastHiddenState`, when requested. */
  hiddenStates?: tf.Tensor3D[];
}

/** Options of {@link ClipVisionEncoder.load}. */
export interface ClipLoadOptions {
  /** Initial `trainable` flag of the weights. Default false (frozen). */
  trainable?: boolean;
}

function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor {
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const variance = tf.mean(tf.square(xc), -1, true);
  return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, eps))), weight), bias);
}

/**
 * y = x Wt + b on a 2-D x, as one fused kernel, with `Wt` the (in, out) transpose of a Linear weight.
 * (The wasm backend runs `transposeB` products on a slow generic path, about 10x slower than XNNPACK's,
 * and its fused kernel adds the bias wrongly when `transposeB` is set: tfjs 4.22.)
 */
function dense(x: tf.Tensor2D, weightT: tf.Tensor, bias: tf.Tensor): tf.Tensor2D {
  return tf.fused.matMul({ a: x, b: weightT as tf.Tensor2D, bias }) as tf.Tensor2D;
}

function activate(x: tf.Tensor, act: ClipActivation): tf.Tensor {
  switch (act) {
    case 'quick_gelu':
      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
    case 'gelu':
      return gelu(x);
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast': {
      const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
    }
    case 'relu':
      return tf.relu(x);
  }
}

/**
 * A CLIP vision tower whose weights are tfjs variables named as in the Hugging Face checkpoint
 * (frozen by default).
 */
export class ClipVisionEncoder {
  private constructor(
    /** The tower's hyper-parameters. */
    readonly config: ClipVisionConfig,
    /** Weights by canonical checkpoint name (`vision_model.…`, `visual_projection.weight`). */
    readonly weights: Map<string, tf.Variable>,
    /** The checkpoint form it was loaded from (undefined for random weights). */
    readonly form?: ClipCheckpointForm,
  ) {
    this.hasProjection = weights.has(VISUAL_PROJECTION_KEY);
  }

  /** True when the checkpoint has `visual_projection.weight` (so `imageEmbeds` can be computed). */
  readonly hasProjection: boolean;

  /**
   * Loads a Hugging Face CLIP folder (`config.json` + `model.safetensors` or a sharded index). Throws
   * {@link ModelLoadError} naming the file and key for a missing tensor, a wrong shape or a non-float dtype.
   */
  static async load(dir: string, options: ClipLoadOptions = {}): Promise<ClipVisionEncoder> {
    const { config, form } = await readClipVisionConfig(dir);
    let ckpt: SafetensorsCheckpoint;
    try {
      ckpt = await SafetensorsCheckpoint.open(dir);
    } catch (e) {
      throw new ModelLoadError(dir, `cannot open the safetensors checkpoint: ${(e as Error).message}`, undefined, { cause: e });
    }
    const weights = new Map<string, tf.Variable>();
    try {
      const prefix = ckpt.has('vision_model.embeddings.class_embedding') || !ckpt.has('embeddings.class_embedding') ? 'vision_model.' : '';
      const want = clipVisionWeightShapes(config);
      if (ckpt.has(VISUAL_PROJECTION_KEY)) {
        const info = ckpt.info(VISUAL_PROJECTION_KEY);
        want.set(VISUAL_PROJECTION_KEY, [config.projectionDim ?? info.shape[0]!, config.hiddenSize]);
      }
      for (const [name, shape] of want) {
        const key = name === VISUAL_PROJECTION_KEY ? name : prefix + name.slice('vision_model.'.length);
        if (!ckpt.has(key)) throw new ModelLoadError(ckpt.source, 'missing tensor', key);
        const info = ckpt.info(key);
        if (!FLOAT_DTYPES.has(info.dtype)) throw new ModelLoadError(info.file, `dtype ${info.dtype} is not a float type`, key);
        if (info.shape.join() !== shape.join()) {
          throw new ModelLoadError(info.file, `shape [${info.shape.join(', ')}] does not match the expected [${shape.join(', ')}]`, key);
        }
        const t = await ckpt.readTensor(key);
        weights.set(name, tf.variable(t, options.trainable ?? false));
        t.dispose();
      }
      if (config.projectionDim === undefined && weights.has(VISUAL_PROJECTION_KEY)) {
        config.projectionDim = weights.get(VISUAL_PROJECTION_KEY)!.shape[0]!;
      }
    } catch (e) {
      for (const v of weights.values()) v.dispose();
      throw e;
    } finally {
      await ckpt.close();
    }
    const encoder = new ClipVisionEncoder(config, weights, form);
    encoder.prepare();
    return encoder;
  }

  /**
   * A tower with random weights (N(0, 0.02), layer norms at identity) of the given size, e.g. for benchmarks.
   * With `projectionDim` set, a random visual projection is added.
   */
  static random(config: ClipVisionConfig, seed = 0, options: ClipLoadOptions = {}): ClipVisionEncoder {
    const weights = new Map<string, tf.Variable>();
    const shapes = clipVisionWeightShapes(config);
    if (config.projectionDim) shapes.set(VISUAL_PROJECTION_KEY, [config.projectionDim, config.hiddenSize]);
    let s = seed;
    for (const [name, shape] of shapes) {
      const t = /norm\d?\.weight$|layrnorm\.weight$/.test(name)
        ? tf.ones(shape)
        : /norm\d?\.bias$|layrnorm\.bias$/.test(name)
          ? tf.zeros(shape)
          : tf.randomNormal(shape, 0, 0.02, 'float32', s++);
      weights.set(name, tf.variable(t, options.trainable ?? false));
      t.dispose();
    }
    const encoder = new ClipVisionEncoder({ ...config }, weights);
    encoder.prepare();
    return encoder;
  }

  /**
   * Tensors derived from frozen weights (transposes, per-head slices), keyed by purpose. Each entry records
   * the data ids of the variables it was computed from and is rebuilt when one of them is reassigned.
   */
  private readonly derived = new Map<string, { deps: object[]; value: tf.Tensor[] }>();
  /** Set by {@link releaseCheckpointLayout}: the derived tensors are final and their sources are gone. */
  private sealed = false;

  private w(name: string): tf.Variable {
    return this.weights.get(`vision_model.${name}`)!;
  }

  private cached(key: string, deps: tf.Variable[], make: () => tf.Tensor[]): tf.Tensor[] {
    const hit = this.derived.get(key);
    if (hit && (this.sealed || hit.deps.every((d, i) => d === deps[i]!.dataId))) return hit.value;
    if (this.sealed) throw new ShapeError(`derived weight ${key} is missing from a sealed encoder`);
    if (hit) tf.dispose(hit.value);
    const value = tf.tidy(make).map((t) => tf.keep(t));
    this.derived.set(key, { deps: deps.map((d) => d.dataId), value });
    return value;
  }

  /**
   * The (in, out) transpose of a matrix weight (patch kernel flattened to (D, C*P*P)). Frozen weights are
   * transposed once and cached (renewed when the variable is reassigned); trainable ones are transposed
   * inside the forward pass so that gradients reach the variable.
   */
  private wT(fullName: string): tf.Tensor2D {
    const v = this.weights.get(fullName);
    const flat = (x: tf.Variable) => (x.rank === 2 ? x : tf.reshape(x, [x.shape[0]!, -1])) as tf.Tensor2D;
    if (v?.trainable) return tf.transpose(flat(v));
    return this.cached(`T:${fullName}`, v ? [v] : [], () => [tf.transpose(flat(v!))])[0] as tf.Tensor2D;
  }

  /** Per-head (in, headDim) slices of a frozen q/k/v projection and its bias; q's are pre-scaled by headDim^-0.5. */
  private headWeights(layer: number, which: 'q' | 'k' | 'v'): { w: tf.Tensor2D[]; b: tf.Tensor1D[] } {
    const c = this.config;
    const heads = c.numAttentionHeads;
    const hd = c.hiddenSize / heads;
    const name = `vision_model.encoder.layers.${layer}.self_attn.${which}_proj`;
    const W = this.weights.get(`${name}.weight`);
    const B = this.weights.get(`${name}.bias`);
    const all = this.cached(`H:${name}`, W && B ? [W, B] : [], () => {
      const scale = which === 'q' ? hd ** -0.5 : 1;
      const wt = tf.transpose(W!);
      const ws: tf.Tensor[] = [];
      const bs: tf.Tensor[] = [];
      for (let h = 0; h < heads; h++) {
        const wh = tf.slice(wt, [0, h * hd], [c.hiddenSize, hd]);
        const bh = tf.slice(B!, [h * hd], [hd]);
        ws.push(scale === 1 ? wh : tf.mul(wh, scale));
        bs.push(scale === 1 ? bh : tf.mul(bh, scale));
      }
      return [...ws, ...bs];
    });
    return { w: all.slice(0, heads) as tf.Tensor2D[], b: all.slice(heads) as tf.Tensor1D[] };
  }

  /** Which attention implementation a forward pass uses (see {@link ClipForwardOptions.attention}). */
  private attentionMode(tokens: number, layer: number, requested: ClipForwardOptions['attention']): 'batched' | 'per-head' {
    const p = `vision_model.encoder.layers.${layer}.self_attn.`;
    const trainable = ['q', 'k', 'v'].some((x) => this.weights.get(`${p}${x}_proj.weight`)?.trainable || this.weights.get(`${p}${x}_proj.bias`)?.trainable);
    if (trainable) return 'batched';
    if (requested === 'batched' || requested === 'per-head') return requested;
    return tokens > PER_HEAD_MIN_TOKENS ? 'per-head' : 'batched';
  }

  /**
   * Builds the derived tensors (transposes, per-head slices) of the frozen weights ahead of the first forward
   * pass (otherwise they are built on first use). Idempotent.
   */
  prepare(): void {
    if (this.sealed) return;
    for (const [name, v] of this.weights) {
      if (v.rank >= 2 && !name.endsWith('position_embedding.weight') && !v.trainable && !/self_attn\.[qkv]_proj/.test(name)) this.wT(name);
    }
    const perHead = numPatches(this.config) + 1 > PER_HEAD_MIN_TOKENS;
    for (let i = 0; i < this.config.numHiddenLayers; i++) {
      for (const x of ['q', 'k', 'v'] as const) {
        const p = `vision_model.encoder.layers.${i}.self_attn.${x}_proj.weight`;
        if (this.weights.get(p)?.trainable) continue;
        if (perHead) this.headWeights(i, x);
        else this.wT(p);
      }
    }
  }

  /**
   * Inference-only mode: builds the derived tensors, then releases the checkpoint-layout matrix weights they
   * came from, halving the memory of a frozen tower. Afterwards the tower can only run `forward` with the
   * attention mode chosen by `auto` (the weights can no longer be trained, saved or reassigned), and
   * {@link weights} no longer lists the released matrices. Used by the worker pool.
   */
  releaseCheckpointLayout(): void {
    this.prepare();
    this.sealed = true;
    for (const [name, v] of [...this.weights]) {
      if (v.rank >= 2 && !name.endsWith('position_embedding.weight')) {
        v.dispose();
        this.weights.delete(name);
      }
    }
  }

  /**
   * Runs the tower on `pixelValues` [b, channels, imageSize, imageSize]. Every intermediate tensor is
   * released; the caller owns the outputs.
   */
  forward(pixelValues: tf.Tensor, options: ClipForwardOptions = {}): ClipVisionOutput {
    const c = this.config;
    if (pixelValues.rank !== 4) throw new ShapeError(`CLIP vision expects pixel_values [b, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}], got [${pixelValues.shape}]`);
    const [b, ch, hgt, wid] = pixelValues.shape as [number, number, number, number];
    if (ch !== c.numChannels || hgt !== c.imageSize || wid !== c.imageSize) {
      throw new ShapeError(`CLIP vision expects pixel_values [b, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}], got [${pixelValues.shape}]`);
    }
    return tf.tidy(() => {
      const D = c.hiddenSize;
      const P = c.patchSize;
      const g = c.imageSize / P;
      const n = g * g + 1;
      const heads = c.numAttentionHeads;
      const hd = D / heads;
      const eps = c.layerNormEps;
      const x = pixelValues.dtype === 'float32' ? pixelValues : tf.cast(pixelValues, 'float32');
      // Patch embedding: im2col by reshape/transpose, then one matrix product with the (D, C*P*P) kernel.
      const cols = tf.reshape(tf.transpose(tf.reshape(x, [b, ch, g, P, g, P]), [0, 2, 4, 1, 3, 5]), [b * g * g, ch * P * P]);
      const patches = tf.reshape(tf.matMul(cols, this.wT('vision_model.embeddings.patch_embedding.weight')), [b, g * g, D]);
      const cls = tf.broadcastTo(tf.reshape(this.w('embeddings.class_embedding'), [1, 1, D]), [b, 1, D]);
      const tokens = tf.add(tf.concat([cls, patches], 1), this.w('embeddings.position_embedding.weight'));
      let h = tf.reshape(layerNorm(tokens, this.w('pre_layrnorm.weight'), this.w('pre_layrnorm.bias'), eps), [b * n, D]) as tf.Tensor2D;
      const hidden: tf.Tensor3D[] = [];
      if (options.outputHiddenStates) hidden.push(tf.reshape(h, [b, n, D]));
      const toHeads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [b, n, heads, hd]), [0, 2, 1, 3]);
      const scale = hd ** -0.5;
      for (let i = 0; i < c.numHiddenLayers; i++) {
        const L = (s: string) => this.w(`encoder.layers.${i}.${s}`);
        const LT = (s: string) => this.wT(`vision_model.encoder.layers.${i}.${s}`);
        const a = layerNorm(h, L('layer_norm1.weight'), L('layer_norm1.bias'), eps) as tf.Tensor2D;
        let ctx: tf.Tensor2D;
        if (this.attentionMode(n, i, options.attention) === 'batched') {
          // [b, heads, n, hd] products on the backend's batched matmul
          const q = toHeads(tf.mul(dense(a, LT('self_attn.q_proj.weight'), L('self_attn.q_proj.bias')), scale));
          const k = toHeads(dense(a, LT('self_attn.k_proj.weight'), L('self_attn.k_proj.bias')));
          const v = toHeads(dense(a, LT('self_attn.v_proj.weight'), L('self_attn.v_proj.bias')));
          const probs = tf.softmax(tf.matMul(q, k, false, true));
          ctx = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [b * n, D]) as tf.Tensor2D;
        } else {
          // one 2-D product per (image, head): each runs on XNNPACK, which the batched kernel does not use
          const Q = this.headWeights(i, 'q');
          const K = this.headWeights(i, 'k');
          const V = this.headWeights(i, 'v');
          const rowsOf = b === 1 ? [a] : tf.split(tf.reshape(a, [b, n * D]), b, 0).map((r) => tf.reshape(r, [n, D]) as tf.Tensor2D);
          const perImage = rowsOf.map((xb) => {
            const perHead: tf.Tensor[] = [];
            for (let hh = 0; hh < heads; hh++) {
              const q = dense(xb, Q.w[hh]!, Q.b[hh]!);
              const k = dense(xb, K.w[hh]!, K.b[hh]!);
              const v = dense(xb, V.w[hh]!, V.b[hh]!);
              perHead.push(tf.matMul(tf.softmax(tf.matMul(q, tf.transpose(k))), v));
            }
            return tf.concat(perHead, 1);
          });
          ctx = (perImage.length === 1 ? perImage[0]! : tf.concat(perImage, 0)) as tf.Tensor2D;
        }
        h = tf.add(h, dense(ctx, LT('self_attn.out_proj.weight'), L('self_attn.out_proj.bias')));
        const m = layerNorm(h, L('layer_norm2.weight'), L('layer_norm2.bias'), eps) as tf.Tensor2D;
        const f = activate(dense(m, LT('mlp.fc1.weight'), L('mlp.fc1.bias')), c.hiddenAct) as tf.Tensor2D;
        h = tf.add(h, dense(f, LT('mlp.fc2.weight'), L('mlp.fc2.bias')));
        if (options.outputHiddenStates) hidden.push(tf.reshape(h, [b, n, D]));
      }
      const out: ClipVisionOutput = { lastHiddenState: tf.reshape(h, [b, n, D]) };
      if (options.outputHiddenStates) out.hiddenStates = hidden;
      if (options.pooled ?? true) {
        const clsOut = tf.reshape(tf.slice(out.lastHiddenState, [0, 0, 0], [b, 1, D]), [b, D]);
        out.poolerOutput = layerNorm(clsOut, this.w('post_layernorm.weight'), this.w('post_layernorm.bias'), eps) as tf.Tensor2D;
        if (this.hasProjection) out.imageEmbeds = tf.matMul(out.poolerOutput, this.wT(VISUAL_PROJECTION_KEY)) as tf.Tensor2D;
      }
      return out as unknown as tf.TensorContainer;
    }) as unknown as ClipVisionOutput;
  }

  /** Sets every weight's `trainable` flag. */
  setTrainable(trainable: boolean): void {
    for (const v of this.weights.values()) v.trainable = trainable;
  }

  /** Releases every weight. */
  dispose(): void {
    for (const v of this.weights.values()) v.dispose();
    for (const d of this.derived.values()) tf.dispose(d.value);
    this.weights.clear();
    this.derived.clear();
  }
}
