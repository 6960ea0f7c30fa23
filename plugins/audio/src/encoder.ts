/**
 * The Whisper audio encoder in tfjs, loaded from a Hugging Face checkpoint (`WhisperModel`, keys
 * `encoder.*`, or `WhisperForConditionalGeneration`, keys `model.encoder.*`; F32/F16/BF16 safetensors,
 * single or sharded; decoder keys ignored).
 *
 * `x = gelu(conv1(features))`, `x = gelu(conv2(x))` (stride 2), `+ embed_positions` (the stored table, never
 * recomputed: half-precision checkpoints round it); pre-LN transformer layers with `k_proj` without bias and
 * `q` scaled by `head_dim^-0.5`; a final LayerNorm. LayerNorm eps 1e-5, convolution GELUs exact (erf).
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { gelu, ModelLoadError, readJsonFile, SafetensorsCheckpoint, ShapeError } from '@multimeditron/core';

/** The `WhisperConfig` fields the encoder uses (read from `config.json`). */
export interface WhisperEncoderConfig {
  /** Hidden size (`d_model`). */
  dModel: number;
  /** `encoder_layers`. */
  layers: number;
  /** `encoder_attention_heads`. */
  heads: number;
  /** `encoder_ffn_dim` (not always 4 * d_model). */
  ffnDim: number;
  /** `num_mel_bins`. */
  numMelBins: number;
  /** `max_source_positions`: output length (1500); the input has twice as many frames. */
  maxSourcePositions: number;
  /** `activation_function` of the feed-forward blocks. */
  activation: string;
}

/** Activations the feed-forward block supports (Hugging Face `ACT2FN` names). */
export const WHISPER_ACTIVATIONS = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'gelu_fast', 'relu', 'quick_gelu', 'silu', 'swish'] as const;

const LN_EPS = 1e-5;

/** Reads the encoder fields of a Hugging Face `WhisperConfig` JSON object. */
export function whisperEncoderConfig(json: Record<string, unknown>, file = 'config.json'): WhisperEncoderConfig {
  const int = (key: string, fallback?: number): number => {
    const v = json[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ModelLoadError(file, `"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  const dModel = int('d_model');
  const heads = int('encoder_attention_heads');
  if (dModel % heads !== 0) throw new ModelLoadError(file, `d_model ${dModel} is not divisible by encoder_attention_heads ${heads}`);
  const activation = String(json['activation_function'] ?? 'gelu');
  if (!(WHISPER_ACTIVATIONS as readonly string[]).includes(activation)) {
    throw new ModelLoadError(file, `unsupported activation_function "${activation}" (supported: ${WHISPER_ACTIVATIONS.join(', ')})`);
  }
  return {
    dModel,
    layers: int('encoder_layers'),
    heads,
    ffnDim: int('encoder_ffn_dim'),
    numMelBins: int('num_mel_bins', 80),
    maxSourcePositions: int('max_source_positions', 1500),
    activation,
  };
}

function activate(x: tf.Tensor, name: string): tf.Tensor {
  switch (name) {
    case 'gelu':
      return gelu(x);
    case 'relu':
      return tf.relu(x);
    case 'quick_gelu':
      return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
    case 'silu':
    case 'swish':
      return tf.mul(x, tf.sigmoid(x));
    default: {
      // tanh approximation (gelu_new, gelu_pytorch_tanh, gelu_fast)
      const inner = tf.mul(tf.add(x, tf.mul(tf.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
      return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
    }
  }
}

/**
 * `y = x W^T + b` with `W` in PyTorch's (out, in) layout. The transpose is explicit: tfjs-wasm's matMul with
 * `transposeB` is ~20x slower than a plain one on these shapes (2.8 s vs 0.12 s for 1500x512 @ 512x2048).
 */
export function dense(x: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const inDim = x.shape[x.shape.length - 1]!;
    const y = tf.matMul(tf.reshape(x, [-1, inDim]) as tf.Tensor2D, tf.transpose(weight) as tf.Tensor2D);
    return tf.reshape(bias ? tf.add(y, bias) : y, [...x.shape.slice(0, -1), weight.shape[0]!]);
  });
}

function layerNorm(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const mean = tf.mean(x, -1, true);
    const xc = tf.sub(x, mean);
    const variance = tf.mean(tf.square(xc), -1, true);
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, LN_EPS))), weight), bias);
  });
}

/** Whisper's sinusoidal position table `[length, channels]` (only for {@link WhisperEncoder.randomInit}). */
function sinusoids(length: number, channels: number): tf.Tensor2D {
  const half = channels / 2;
  const inc = Math.log(10000) / (half - 1);
  const data = new Float32Array(length * channels);
  for (let p = 0; p < length; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * Math.exp(-inc * i);
      data[p * channels + i] = Math.sin(a);
      data[p * channels + half + i] = Math.cos(a);
    }
  }
  return tf.tensor2d(data, [length, channels]);
}

/** Output of {@link WhisperEncoder.forward}. */
export interface WhisperEncoderOutput {
  /** `[b, maxSourcePositions, dModel]`, after the final LayerNorm. */
  lastHiddenState: tf.Tensor3D;
  /**
   * With `outputHiddenStates`: Hugging Face's `hidden_states` (`layers + 1` tensors): index 0 = conv stack +
   * positions, index i = output of layer i-1, the last = `lastHiddenState`.
   */
  hiddenStates?: tf.Tensor3D[];
}

/** The Whisper encoder. Weights are tf.Variables (not trainable until a modality unfreezes them). */
export class WhisperEncoder {
  private constructor(
    readonly config: WhisperEncoderConfig,
    /** The weights under their `WhisperModel` names (`encoder.conv1.weight`, ...). */
    readonly variables: Map<string, tf.Variable>,
    /** The checkpoint's own key prefix (`model.encoder.`, `encoder.` or none). */
    readonly sourcePrefix: string,
  ) {}

  /** Expected shape of every encoder weight, by name without prefix. */
  static weightShapes(c: WhisperEncoderConfig): Map<string, number[]> {
    const d = c.dModel;
    const m = new Map<string, number[]>([
      ['conv1.weight', [d, c.numMelBins, 3]], ['conv1.bias', [d]],
      ['conv2.weight', [d, d, 3]], ['conv2.bias', [d]],
      ['embed_positions.weight', [c.maxSourcePositions, d]],
    ]);
    for (let i = 0; i < c.layers; i++) {
      const p = `layers.${i}.`;
      for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
        m.set(`${p}self_attn.${proj}.weight`, [d, d]);
        if (proj !== 'k_proj') m.set(`${p}self_attn.${proj}.bias`, [d]);
      }
      for (const ln of ['self_attn_layer_norm', 'final_layer_norm']) {
        m.set(`${p}${ln}.weight`, [d]);
        m.set(`${p}${ln}.bias`, [d]);
      }
      m.set(`${p}fc1.weight`, [c.ffnDim, d]);
      m.set(`${p}fc1.bias`, [c.ffnDim]);
      m.set(`${p}fc2.weight`, [d, c.ffnDim]);
      m.set(`${p}fc2.bias`, [d]);
    }
    m.set('layer_norm.weight', [d]);
    m.set('layer_norm.bias', [d]);
    return m;
  }

  /**
   * Loads the encoder from a local model folder (`config.json` + safetensors). Throws {@link ModelLoadError}
   * naming the file and key on a missing key, a wrong shape or an unusable config.
   */
  static async fromPretrained(dir: string, options: { trainable?: boolean } = {}): Promise<WhisperEncoder> {
    const configFile = path.join(dir, 'config.json');
    const json = (await readJsonFile(configFile)) as Record<string, unknown>;
    if (json['model_type'] !== undefined && json['model_type'] !== 'whisper') {
      throw new ModelLoadError(configFile, `model_type is "${String(json['model_type'])}", expected "whisper"`);
    }
    const config = whisperEncoderConfig(json, configFile);
    let ckpt: SafetensorsCheckpoint;
    try {
      ckpt = await SafetensorsCheckpoint.open(dir);
    } catch (e) {
      const hasBin = await fs.access(path.join(dir, 'pytorch_model.bin')).then(() => true, () => false);
      throw new ModelLoadError(dir, `cannot open the safetensors checkpoint: ${(e as Error).message}`, undefined, {
        cause: e,
        suggestions: hasBin ? ['Only pytorch_model.bin is present: convert it to safetensors (or download the safetensors revision).'] : [],
      });
    }
    const variables = new Map<string, tf.Variable>();
    try {
      const prefix = ['model.encoder.', 'encoder.', ''].find((p) => ckpt.has(`${p}conv1.weight`));
      if (prefix === undefined) {
        throw new ModelLoadError(ckpt.source, 'no Whisper encoder weights found (expected model.encoder.* or encoder.*)', 'conv1.weight');
      }
      for (const [name, shape] of WhisperEncoder.weightShapes(config)) {
        const key = prefix + name;
        if (!ckpt.has(key)) throw new ModelLoadError(ckpt.source, 'missing encoder weight', key);
        const info = ckpt.info(key);
        if (info.shape.join() !== shape.join()) {
          throw new ModelLoadError(info.file, `shape [${info.shape}] does not match config.json's [${shape}]`, key);
        }
        if (!['F32', 'F16', 'BF16', 'F64'].includes(info.dtype)) throw new ModelLoadError(info.file, `dtype ${info.dtype} is not a float type`, key);
        const t = await ckpt.readTensor(key);
        variables.set(`encoder.${name}`, tf.variable(t, options.trainable ?? false));
        t.dispose();
      }
      return new WhisperEncoder(config, variables, prefix);
    } catch (e) {
      for (const v of variables.values()) v.dispose();
      throw e;
    } finally {
      await ckpt.close();
    }
  }

  /**
   * An encoder with random weights (normal, std 0.02; LayerNorms at 1/0; the sinusoidal position table), for
   * benchmarks and tests that need a given size but no checkpoint.
   */
  static randomInit(config: WhisperEncoderConfig, seed = 0): WhisperEncoder {
    const variables = new Map<string, tf.Variable>();
    let s = seed;
    for (const [name, shape] of WhisperEncoder.weightShapes(config)) {
      const t = tf.tidy(() => {
        if (name === 'embed_positions.weight') return sinusoids(config.maxSourcePositions, config.dModel);
        if (/layer_norm\.weight$/.test(name)) return tf.ones(shape);
        if (name.endsWith('.bias')) return tf.zeros(shape);
        return tf.randomNormal(shape, 0, 0.02, 'float32', s++);
      });
      variables.set(`encoder.${name}`, tf.variable(t, false));
      t.dispose();
    }
    return new WhisperEncoder(config, variables, '');
  }

  private w(name: string): tf.Variable {
    return this.variables.get(`encoder.${name}`)!;
  }

  /** Number of input frames the encoder expects (2 x max_source_positions = 3000). */
  get inputFrames(): number {
    return 2 * this.config.maxSourcePositions;
  }

  /**
   * Runs the encoder on `[b, numMelBins, 2 * maxSourcePositions]` log-mel features. Tensors are tidied;
   * the caller owns the returned ones.
   */
  forward(features: tf.Tensor, options: { outputHiddenStates?: boolean } = {}): WhisperEncoderOutput {
    const c = this.config;
    if (features.rank !== 3 || features.shape[1] !== c.numMelBins || features.shape[2] !== this.inputFrames) {
      throw new ShapeError(`Whisper encoder expects input_features [b, ${c.numMelBins}, ${this.inputFrames}], got [${features.shape}]`);
    }
    return tf.tidy(() => {
      const conv = (x: tf.Tensor3D, name: string, stride: number) => tf.tidy(() => {
        const filter = tf.transpose(this.w(`${name}.weight`), [2, 1, 0]) as tf.Tensor3D; // [k, in, out]
        const padded = tf.pad(x, [[0, 0], [1, 1], [0, 0]]);
        return gelu(tf.add(tf.conv1d(padded, filter, stride, 'valid'), this.w(`${name}.bias`))) as tf.Tensor3D;
      });
      const x0 = tf.transpose(features, [0, 2, 1]) as tf.Tensor3D; // [b, frames, mels]
      const x1 = conv(x0, 'conv1', 1);
      const x2 = conv(x1, 'conv2', 2);
      let h = tf.add(x2, this.w('embed_positions.weight')) as tf.Tensor3D;
      const hidden: tf.Tensor3D[] = [h];
      for (let i = 0; i < c.layers; i++) {
        h = this.layer(h, i);
        if (options.outputHiddenStates && i < c.layers - 1) hidden.push(h);
      }
      const last = layerNorm(h, this.w('layer_norm.weight'), this.w('layer_norm.bias')) as tf.Tensor3D;
      if (!options.outputHiddenStates) return { lastHiddenState: last };
      hidden.push(last);
      return { lastHiddenState: last, hiddenStates: hidden };
    });
  }

  private layer(h: tf.Tensor3D, i: number): tf.Tensor3D {
    return tf.tidy(() => {
      const c = this.config;
      const p = `layers.${i}.`;
      const [b, T, d] = h.shape;
      const H = c.heads;
      const hd = d / H;
      const x = layerNorm(h, this.w(`${p}self_attn_layer_norm.weight`), this.w(`${p}self_attn_layer_norm.bias`));
      const q = tf.mul(dense(x, this.w(`${p}self_attn.q_proj.weight`), this.w(`${p}self_attn.q_proj.bias`)), hd ** -0.5);
      const k = dense(x, this.w(`${p}self_attn.k_proj.weight`));
      const v = dense(x, this.w(`${p}self_attn.v_proj.weight`), this.w(`${p}self_attn.v_proj.bias`));
      // Attention one example and one head at a time, with plain 2-D matMuls: tfjs-wasm's batched matMul is
      // ~10x slower than a loop of 2-D ones here, and this keeps a single [T, T] score matrix alive.
      const outs: tf.Tensor[] = [];
      for (let e = 0; e < b; e++) {
        outs.push(tf.tidy(() => {
          const row = (t: tf.Tensor) => tf.reshape(tf.slice(t, [e, 0, 0], [1, T, d]), [T, d]) as tf.Tensor2D;
          const qe = row(q);
          const ke = row(k);
          const ve = row(v);
          const heads: tf.Tensor[] = [];
          for (let hh = 0; hh < H; hh++) {
            heads.push(tf.tidy(() => {
              const cols = (t: tf.Tensor2D) => tf.slice(t, [0, hh * hd], [T, hd]) as tf.Tensor2D;
              const probs = tf.softmax(tf.matMul(cols(qe), tf.transpose(cols(ke))));
              return tf.matMul(probs, cols(ve)); // [T, hd]
            }));
          }
          return H === 1 ? heads[0]! : tf.concat(heads, 1); // [T, H * hd]
        }));
      }
      const attn = b === 1 ? tf.expandDims(outs[0]!, 0) : tf.stack(outs);
      const h1 = tf.add(h, dense(attn, this.w(`${p}self_attn.out_proj.weight`), this.w(`${p}self_attn.out_proj.bias`)));
      const y = layerNorm(h1, this.w(`${p}final_layer_norm.weight`), this.w(`${p}final_layer_norm.bias`));
      const f = dense(activate(dense(y, this.w(`${p}fc1.weight`), this.w(`${p}fc1.bias`)), c.activation), this.w(`${p}fc2.weight`), this.w(`${p}fc2.bias`));
      return tf.add(h1, f) as tf.Tensor3D;
    });
  }

  /** Sets `trainable` on every weight. */
  setTrainable(trainable: boolean): void {
    for (const v of this.variables.values()) v.trainable = trainable;
  }

  /** Releases every weight. */
  dispose(): void {
    for (const v of this.variables.values()) v.dispose();
    this.variables.clear();
  }
}
