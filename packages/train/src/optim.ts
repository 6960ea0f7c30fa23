/**
 * Optimizers with PyTorch semantics (what the Hugging Face Trainer runs): `torch.optim.AdamW` (decoupled weight
 * decay, bias correction, eps added after the square root) and `torch.optim.SGD` (coupled weight decay,
 * optional momentum), over named parameter groups; gradient clipping by global norm
 * (`torch.nn.utils.clip_grad_norm_`). Scalar coefficients are computed in float64 as Python does, tensors in
 * float32. The state (step counts, moments) is exported as named host tensors for checkpoints and restored
 * bit-exactly.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { MultimeditronError, ShapeError } from '@multimeditron/core';

/** A named trainable parameter. */
export interface NamedParameter {
  name: string;
  variable: tf.Variable;
}

/** A group of parameters sharing a weight decay (the HF Trainer makes two: decayed and not). */
export interface ParameterGroup {
  params: NamedParameter[];
  weightDecay: number;
}

/** The optimizer state as host data: scalars and named float32 tensors. */
export interface OptimizerState {
  kind: 'adamw' | 'sgd';
  step: number;
  /** Hyper-parameters the state was made with (checked on restore). */
  hyper: Record<string, number | boolean>;
  /** Per-parameter buffers, keyed `<param name>/<buffer>` (`exp_avg`, `exp_avg_sq`, `momentum_buffer`). */
  tensors: Map<string, { data: Float32Array; shape: number[] }>;
}

/** Common interface of {@link AdamW} and {@link SGD}. */
export interface Optimizer {
  readonly kind: 'adamw' | 'sgd';
  /** Number of steps taken. */
  readonly stepCount: number;
  readonly groups: readonly ParameterGroup[];
  /** Applies one update with learning rate `lr`; `grads` maps parameter names to gradients (not disposed). */
  step(grads: Map<string, tf.Tensor>, lr: number): void;
  getState(): OptimizerState;
  setState(state: OptimizerState): void;
  dispose(): void;
}

/** The error of an optimizer state that does not fit the parameters. */
export class OptimizerStateError extends MultimeditronError {
  constructor(message: string) {
    super('E_OPTIMIZER_STATE', message);
  }
}

function checkGrad(p: NamedParameter, g: tf.Tensor | undefined): tf.Tensor {
  if (!g) throw new ShapeError(`no gradient for trainable parameter ${p.name}`);
  if (g.shape.join() !== p.variable.shape.join()) throw new ShapeError(`gradient of ${p.name} is [${g.shape}], the parameter [${p.variable.shape}]`);
  return g;
}

function zerosVariable(v: tf.Variable): tf.Variable {
  return tf.tidy(() => tf.variable(tf.zerosLike(v), false));
}

abstract class BaseOptimizer implements Optimizer {
  abstract readonly kind: 'adamw' | 'sgd';
  protected steps = 0;
  /** Buffers by `<param>/<name>`. */
  protected readonly buffers = new Map<string, tf.Variable>();

  constructor(readonly groups: readonly ParameterGroup[]) {
    const seen = new Set<string>();
    for (const g of groups) {
      for (const p of g.params) {
        if (seen.has(p.name)) throw new ShapeError(`parameter ${p.name} is in two groups`);
        seen.add(p.name);
      }
    }
  }

  get stepCount(): number {
    return this.steps;
  }

  abstract step(grads: Map<string, tf.Tensor>, lr: number): void;
  protected abstract hyper(): Record<string, number | boolean>;
  protected abstract bufferNames(): string[];

  protected buffer(p: NamedParameter, name: string): tf.Variable {
    const key = `${p.name}/${name}`;
    let b = this.buffers.get(key);
    if (!b) {
      b = zerosVariable(p.variable);
      this.buffers.set(key, b);
    }
    return b;
  }

  getState(): OptimizerState {
    const tensors = new Map<string, { data: Float32Array; shape: number[] }>();
    for (const [k, v] of this.buffers) tensors.set(k, { data: (v.dataSync() as Float32Array).slice(), shape: [...v.shape] });
    return { kind: this.kind, step: this.steps, hyper: this.hyper(), tensors };
  }

  setState(state: OptimizerState): void {
    if (state.kind !== this.kind) throw new OptimizerStateError(`the checkpoint's optimizer is ${state.kind}, the config asks for ${this.kind}`);
    const params = new Map(this.groups.flatMap((g) => g.params.map((p) => [p.name, p] as const)));
    const names = new Set(this.bufferNames());
    for (const [k, t] of state.tensors) {
      const slash = k.lastIndexOf('/');
      const p = params.get(k.slice(0, slash));
      if (!p || !names.has(k.slice(slash + 1))) throw new OptimizerStateError(`optimizer state ${k} matches no trainable parameter (was the training mode changed?)`);
      if (t.shape.join() !== p.variable.shape.join()) throw new OptimizerStateError(`optimizer state ${k} is [${t.shape}], the parameter [${p.variable.shape}]`);
    }
    for (const v of this.buffers.values()) v.dispose();
    this.buffers.clear();
    for (const [k, t] of state.tensors) {
      const init = tf.tensor(t.data, t.shape, 'float32');
      this.buffers.set(k, tf.variable(init, false));
      init.dispose();
    }
    this.steps = state.step;
  }

  dispose(): void {
    for (const v of this.buffers.values()) v.dispose();
    this.buffers.clear();
  }
}

/** Options of {@link AdamW} (torch defaults). */
export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
}

/**
 * `torch.optim.AdamW` (amsgrad off, maximize off): per step t, `p *= 1 - lr * wd`; `m += (1 - beta1) (g - m)`;
 * `v = beta2 v + (1 - beta2) g^2`; `p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`.
 */
export class AdamW extends BaseOptimizer {
  readonly kind = 'adamw' as const;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;

  constructor(groups: readonly ParameterGroup[], options: AdamWOptions = {}) {
    super(groups);
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.999;
    this.eps = options.eps ?? 1e-8;
  }

  protected hyper(): Record<string, number> {
    return { beta1: this.beta1, beta2: this.beta2, eps: this.eps };
  }

  protected bufferNames(): string[] {
    return ['exp_avg', 'exp_avg_sq'];
  }

  step(grads: Map<string, tf.Tensor>, lr: number): void {
    const t = this.steps + 1;
    const bc1 = 1 - this.beta1 ** t;
    const bc2Sqrt = Math.sqrt(1 - this.beta2 ** t);
    const stepSize = lr / bc1;
    for (const group of this.groups) {
      for (const p of group.params) {
        const g = checkGrad(p, grads.get(p.name));
        const m = this.buffer(p, 'exp_avg');
        const v = this.buffer(p, 'exp_avg_sq');
        tf.tidy(() => {
          const decayed = group.weightDecay !== 0 && lr !== 0 ? tf.mul(p.variable, 1 - lr * group.weightDecay) : p.variable;
          // torch's lerp_: m + (1 - beta1) (g - m)
          const m1 = tf.add(m, tf.mul(tf.sub(g, m), 1 - this.beta1));
          const v1 = tf.add(tf.mul(v, this.beta2), tf.mul(tf.mul(g, g), 1 - this.beta2));
          const denom = tf.add(tf.div(tf.sqrt(v1), bc2Sqrt), this.eps);
          m.assign(m1);
          v.assign(v1);
          p.variable.assign(tf.sub(decayed, tf.mul(tf.div(m1, denom), stepSize)));
        });
      }
    }
    this.steps = t;
  }
}

/** Options of {@link SGD} (torch defaults). */
export interface SGDOptions {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
}

/** `torch.optim.SGD`: `g += wd p`; with momentum `b = momentum b + (1 - dampening) g` (b = g at the first step); `p -= lr g`. */
export class SGD extends BaseOptimizer {
  readonly kind = 'sgd' as const;
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;

  constructor(groups: readonly ParameterGroup[], options: SGDOptions = {}) {
    super(groups);
    this.momentum = options.momentum ?? 0;
    this.dampening = options.dampening ?? 0;
    this.nesterov = options.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) throw new ShapeError('Nesterov momentum requires a momentum and zero dampening');
  }

  protected hyper(): Record<string, number | boolean> {
    return { momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov };
  }

  protected bufferNames(): string[] {
    return ['momentum_buffer'];
  }

  step(grads: Map<string, tf.Tensor>, lr: number): void {
    for (const group of this.groups) {
      for (const p of group.params) {
        const g0 = checkGrad(p, grads.get(p.name));
        tf.tidy(() => {
          let g = group.weightDecay !== 0 ? tf.add(g0, tf.mul(p.variable, group.weightDecay)) : g0;
          if (this.momentum !== 0) {
            const first = !this.buffers.has(`${p.name}/momentum_buffer`);
            const b = this.buffer(p, 'momentum_buffer');
            const b1 = first ? g : tf.add(tf.mul(b, this.momentum), tf.mul(g, 1 - this.dampening));
            b.assign(b1);
            g = this.nesterov ? tf.add(g, tf.mul(b1, this.momentum)) : b1;
          }
          p.variable.assign(tf.sub(p.variable, tf.mul(g, lr)));
        });
      }
    }
    this.steps += 1;
  }
}

/**
 * The global L2 norm of the gradients (norm of the per-tensor norms, float32, as torch), and, when `maxNorm` > 0,
 * the gradients scaled by `min(1, maxNorm / (norm + 1e-6))` (torch multiplies by the clamped coefficient
 * always). Returns the norm before clipping and the (new or same) gradient map; replaced tensors are disposed.
 */
export function clipGradNorm(grads: Map<string, tf.Tensor>, maxNorm: number | null | undefined): { norm: number; grads: Map<string, tf.Tensor> } {
  const norm = tf.tidy(() => {
    const norms = [...grads.values()].map((g) => tf.norm(g));
    return norms.length ? tf.norm(tf.stack(norms)).dataSync()[0]! : 0;
  });
  if (!maxNorm || maxNorm <= 0) return { norm, grads };
  const coef = Math.fround(Math.min(1, Math.fround(maxNorm) / Math.fround(norm + 1e-6)));
  if (coef === 1) return { norm, grads };
  const out = new Map<string, tf.Tensor>();
  for (const [k, g] of grads) {
    out.set(k, tf.tidy(() => tf.mul(g, coef)));
    g.dispose();
  }
  return { norm, grads: out };
}

/**
 * The Hugging Face Trainer's grouping: weight decay on every parameter except biases and normalisation weights
 * (names with `bias`, or with a `norm` / `layernorm` / `layrnorm` component, e.g. `input_layernorm.weight`,
 * `model.norm.weight`, `q_norm.weight`, CLIP's `pre_layrnorm.weight`).
 */
export function decayGroups(params: readonly NamedParameter[], weightDecay: number): ParameterGroup[] {
  const noDecay = (name: string) => /(^|\.)[^.]*bias$/i.test(name) || /(norm|layrnorm)/i.test(name);
  const decay = params.filter((p) => !noDecay(p.name));
  const rest = params.filter((p) => noDecay(p.name));
  return [
    ...(decay.length ? [{ params: decay, weightDecay }] : []),
    ...(rest.length ? [{ params: rest, weightDecay: 0 }] : []),
  ];
}
