/**
 * Projectors: trainable maps from an encoder's feature size to the LLM's hidden size, applied token-wise.
 * Chosen by `projectionType` in a modality config.
 *
 * - `mlp` (the original's): Linear(in, in) -> GELU -> Linear(in, out) -> GELU -> Linear(out, out),
 *   biases on, exact (erf) GELU.
 * - `linear`: one Linear(in, out).
 * - `pixel_shuffle`: folds f x f neighbouring patches of a square g x g grid into one token
 *   (channels x f^2, in the order (dy, dx, channel)), then one Linear(in * f^2, out). The grid must be
 *   divisible by f; the token count becomes (g / f)^2.
 *
 * Weights are stored as Hugging Face stores Linear layers: `weight` is (out, in), `bias` is (out).
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { ConfigValidationError, ModelLoadError, ShapeError } from './errors.js';

/** The projector kinds. */
export type ProjectionType = 'mlp' | 'linear' | 'pixel_shuffle';
/** Every projector kind, for schemas. */
export const PROJECTION_TYPES: readonly ProjectionType[] = ['mlp', 'linear', 'pixel_shuffle'];

/** Options of {@link createProjector}. */
export interface ProjectorOptions {
  type: ProjectionType;
  /** Feature size of the encoder output. */
  inputDim: number;
  /** LLM hidden size. */
  outputDim: number;
  /** Fold factor of `pixel_shuffle` (default 2). */
  pixelShuffleFactor?: number;
  /** Seed of the initial weights (PyTorch's default Linear init: U(-1/sqrt(in), 1/sqrt(in))). */
  seed?: number;
}

/** Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2)))));
}

/** y = x W^T + b for x of any rank (last axis = in features). */
export function linear(x: tf.Tensor, weight: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const inDim = x.shape[x.shape.length - 1]!;
    const lead = x.shape.slice(0, -1);
    // An explicit transpose, not matMul(..., transposeB = true): on the wasm backend the transposed-B path
    // misses XNNPACK and runs a generic loop ~10-20x slower.
    const y = tf.matMul(tf.reshape(x, [-1, inDim]) as tf.Tensor2D, tf.transpose(weight) as tf.Tensor2D);
    const yb = bias ? tf.add(y, bias) : y;
    return tf.reshape(yb, [...lead, weight.shape[0]!]);
  });
}

/** Side of the square grid of `n` tokens; throws when it is not square or not divisible by `factor`. */
function pixelShuffleGrid(n: number, factor: number): number {
  const g = Math.round(Math.sqrt(n));
  if (g * g !== n) throw new ShapeError(`pixel_shuffle needs a square patch grid, got ${n} tokens`);
  if (g % factor !== 0) throw new ShapeError(`pixel_shuffle: grid ${g}x${g} is not divisible by factor ${factor}`);
  return g;
}

/**
 * Space-to-depth on a square patch grid: [b, g*g, c] -> [b, (g/f)^2, c*f*f], grouping each f x f block
 * in (dy, dx, channel) order.
 */
export function pixelShuffle(x: tf.Tensor3D, factor: number): tf.Tensor3D {
  return tf.tidy(() => {
    const [b, n, c] = x.shape;
    const h = pixelShuffleGrid(n, factor) / factor;
    const t = tf.reshape(x, [b, h, factor, h, factor, c]);
    const p = tf.transpose(t, [0, 1, 3, 2, 4, 5]);
    return tf.reshape(p, [b, h * h, c * factor * factor]) as tf.Tensor3D;
  });
}

/** A trainable variable initialised from U(-bound, bound); the initial tensor is released. */
function initVariable(shape: number[], bound: number, seed: number): tf.Variable {
  const init = tf.randomUniform(shape, -bound, bound, 'float32', seed);
  try {
    return tf.variable(init, true);
  } finally {
    init.dispose();
  }
}

interface LinearLayer {
  weight: tf.Variable;
  bias: tf.Variable;
}

/** A projector: its variables, its forward function and how it changes the token count. */
export class Projector {
  /** Layers keyed by their weight-name prefix (`layers.0`, ...). */
  private readonly layers: Map<string, LinearLayer>;

  constructor(readonly options: Required<Omit<ProjectorOptions, 'seed'>> & { seed: number }) {
    this.layers = new Map();
    const { type, inputDim: i, outputDim: o } = options;
    const f = options.pixelShuffleFactor;
    const dims: Array<[string, number, number]> =
      type === 'mlp'
        ? [['layers.0', i, i], ['layers.2', i, o], ['layers.4', o, o]]
        : type === 'linear'
          ? [['layers.0', i, o]]
          : [['layers.0', i * f * f, o]];
    let seed = options.seed;
    for (const [name, inD, outD] of dims) {
      const bound = 1 / Math.sqrt(inD);
      // Variables stay unnamed: tfjs variable names are global to the engine, so fixed names would forbid a
      // second projector in the process. Their checkpoint names come from namedWeights().
      const weight = initVariable([outD, inD], bound, seed++);
      const bias = initVariable([outD], bound, seed++);
      this.layers.set(name, { weight, bias });
    }
  }

  /**
   * Token count after projection, given the encoder's token count: unchanged for `mlp` and `linear`,
   * `(g / f)^2` for `pixel_shuffle` on a g x g grid. Throws {@link ShapeError} when `pixel_shuffle` cannot
   * fold that many tokens (not a square grid, or a side not divisible by the factor).
   */
  outputTokens(inputTokens: number): number {
    if (!Number.isInteger(inputTokens) || inputTokens < 1) throw new ShapeError(`token count must be a positive integer, got ${inputTokens}`);
    if (this.options.type !== 'pixel_shuffle') return inputTokens;
    const g = pixelShuffleGrid(inputTokens, this.options.pixelShuffleFactor);
    const h = g / this.options.pixelShuffleFactor;
    return h * h;
  }

  /** All trainable variables, in layer order. */
  get variables(): tf.Variable[] {
    return [...this.layers.values()].flatMap((l) => [l.weight, l.bias]);
  }

  /** The weights by name (`layers.0.weight`, ...), e.g. for saving as safetensors. */
  namedWeights(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [name, l] of this.layers) {
      out.set(`${name}.weight`, l.weight);
      out.set(`${name}.bias`, l.bias);
    }
    return out;
  }

  /** Overwrites the weights from a name -> tensor map (shapes must match). The caller keeps ownership of `weights`. */
  loadWeights(weights: Map<string, tf.Tensor> | Record<string, tf.Tensor>, source = '<weights>', prefix = ''): void {
    const get = (k: string) => (weights instanceof Map ? weights.get(k) : weights[k]);
    for (const [name, v] of this.namedWeights()) {
      const t = get(prefix + name);
      if (!t) throw new ModelLoadError(source, 'missing projector weight', prefix + name);
      if (t.shape.join() !== v.shape.join()) {
        throw new ModelLoadError(source, `shape [${t.shape}] does not match the projector's [${v.shape}]`, prefix + name);
      }
      v.assign(t as tf.Tensor);
    }
  }

  /** [b, n, in] -> [b, outputTokens(n), out]. */
  apply(x: tf.Tensor3D): tf.Tensor3D {
    if (x.rank !== 3 || x.shape[2] !== this.options.inputDim) {
      throw new ShapeError(`projector expects [batch, tokens, ${this.options.inputDim}], got [${x.shape.join(', ')}]`);
    }
    return tf.tidy(() => {
      const L = (n: string) => this.layers.get(n)!;
      switch (this.options.type) {
        case 'mlp': {
          let h = gelu(linear(x, L('layers.0').weight, L('layers.0').bias));
          h = gelu(linear(h, L('layers.2').weight, L('layers.2').bias));
          return linear(h, L('layers.4').weight, L('layers.4').bias) as tf.Tensor3D;
        }
        case 'linear':
          return linear(x, L('layers.0').weight, L('layers.0').bias) as tf.Tensor3D;
        case 'pixel_shuffle':
          return linear(pixelShuffle(x, this.options.pixelShuffleFactor), L('layers.0').weight, L('layers.0').bias) as tf.Tensor3D;
      }
    });
  }

  /** Sets every variable's `trainable` flag. */
  setTrainable(trainable: boolean): void {
    for (const v of this.variables) v.trainable = trainable;
  }

  /** Releases every variable; the projector is unusable afterwards. */
  dispose(): void {
    for (const v of this.variables) v.dispose();
    this.layers.clear();
  }
}

/** Builds a projector with freshly initialised weights. */
export function createProjector(options: ProjectorOptions): Projector {
  if (!PROJECTION_TYPES.includes(options.type)) {
    throw new ConfigValidationError('projector', [
      { path: '/projectionType', rule: 'enum', message: `must be one of ${PROJECTION_TYPES.join(', ')}` },
    ]);
  }
  const factor = options.pixelShuffleFactor ?? 2;
  if (!Number.isInteger(factor) || factor < 1) {
    throw new ConfigValidationError('projector', [{ path: '/pixelShuffleFactor', rule: 'minimum', message: 'must be an integer >= 1' }]);
  }
  return new Projector({ ...options, pixelShuffleFactor: factor, seed: options.seed ?? 0 });
}
