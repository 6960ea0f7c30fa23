import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigValidationError, createProjector, gelu, linear, ModelLoadError, pixelShuffle, Projector, PROJECTION_TYPES,
  selectBackend, ShapeError,
} from '@multimeditron/core';
import { geluExact, geluTanh, linearRef, maxAbsDiff, pixelShuffleRef, randomArray } from './helpers/reference.js';

// float32 maths over a few dozen terms of O(1) values
const ATOL = 2e-5;

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
});

function weights(p: Projector, name: string): Float32Array {
  return p.namedWeights().get(name)!.dataSync() as Float32Array;
}

/** Runs the projector on a [b, n, in] input and returns the output data and shape, leaking nothing. */
function run(p: Projector, x: Float32Array, shape: [number, number, number]): { data: Float32Array; shape: number[] } {
  const before = tf.memory().numTensors;
  const input = tf.tensor3d(x, shape);
  const out = p.apply(input);
  const res = { data: out.dataSync() as Float32Array, shape: out.shape };
  input.dispose();
  out.dispose();
  expect(tf.memory().numTensors).toBe(before);
  return res;
}

describe('GELU is the exact (erf) GELU', () => {
  test('matches 0.5 x (1 + erf(x / sqrt 2)) on [-6, 6] and is not the tanh approximation', () => {
    const xs = Float32Array.from({ length: 241 }, (_, i) => -6 + i * 0.05);
    const before = tf.memory().numTensors;
    const t = tf.tensor1d(xs);
    const y = gelu(t);
    const got = y.dataSync();
    t.dispose();
    y.dispose();
    expect(tf.memory().numTensors).toBe(before);
    const exact = Array.from(xs, geluExact);
    const approx = Array.from(xs, geluTanh);
    expect(maxAbsDiff(got, exact)).toBeLessThan(2e-6);
    // the tanh approximation differs from the exact GELU by far more than our tolerance
    expect(maxAbsDiff(approx, exact)).toBeGreaterThan(1e-4);
    expect(maxAbsDiff(got, approx)).toBeGreaterThan(1e-4);
  });
});

describe('linear projector', () => {
  test('y = x W^T + b token-wise, with W stored (out, in)', () => {
    const p = createProjector({ type: 'linear', inputDim: 5, outputDim: 3, seed: 11 });
    try {
      expect(p.namedWeights().get('layers.0.weight')!.shape).toEqual([3, 5]);
      expect(p.namedWeights().get('layers.0.bias')!.shape).toEqual([3]);
      const x = randomArray(2 * 4 * 5, 1);
      const { data, shape } = run(p, x, [2, 4, 5]);
      expect(shape).toEqual([2, 4, 3]);
      const ref = linearRef(x, 8, weights(p, 'layers.0.weight'), weights(p, 'layers.0.bias'), 5, 3);
      expect(maxAbsDiff(data, ref)).toBeLessThan(ATOL);
    } finally {
      p.dispose();
    }
  });

  test('the linear() helper accepts any rank and leaves no tensor behind', () => {
    const before = tf.memory().numTensors;
    const x = tf.tensor(randomArray(3 * 2 * 2 * 4, 2), [3, 2, 2, 4]);
    const w = tf.tensor2d(randomArray(6 * 4, 3), [6, 4]);
    const y = linear(x, w);
    expect(y.shape).toEqual([3, 2, 2, 6]);
    const ref = linearRef(x.dataSync(), 12, w.dataSync(), new Float32Array(6), 4, 6);
    expect(maxAbsDiff(y.dataSync(), ref)).toBeLessThan(ATOL);
    tf.dispose([x, w, y]);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('mlp projector', () => {
  test('Linear(in,in) -> GELU -> Linear(in,out) -> GELU -> Linear(out,out), biases on', () => {
    const [inD, outD] = [6, 4];
    const p = createProjector({ type: 'mlp', inputDim: inD, outputDim: outD, seed: 3 });
    try {
      expect([...p.namedWeights()].map(([k, v]) => [k, v.shape])).toEqual([
        ['layers.0.weight', [inD, inD]], ['layers.0.bias', [inD]],
        ['layers.2.weight', [outD, inD]], ['layers.2.bias', [outD]],
        ['layers.4.weight', [outD, outD]], ['layers.4.bias', [outD]],
      ]);
      const rows = 2 * 5;
      const x = randomArray(rows * inD, 4, -2, 2);
      const { data, shape } = run(p, x, [2, 5, inD]);
      expect(shape).toEqual([2, 5, outD]);
      let h = linearRef(x, rows, weights(p, 'layers.0.weight'), weights(p, 'layers.0.bias'), inD, inD).map(geluExact);
      h = linearRef(h, rows, weights(p, 'layers.2.weight'), weights(p, 'layers.2.bias'), inD, outD).map(geluExact);
      const ref = linearRef(h, rows, weights(p, 'layers.4.weight'), weights(p, 'layers.4.bias'), outD, outD);
      expect(maxAbsDiff(data, ref)).toBeLessThan(ATOL);
    } finally {
      p.dispose();
    }
  });
});

describe('pixel_shuffle projector', () => {
  test('folds each f x f block in (dy, dx, channel) order: index-valued input', () => {
    // value = token * 100 + channel, so each output feature names its source
    const [g, c, f] = [4, 3, 2];
    const x = Float32Array.from({ length: g * g * c }, (_, i) => Math.floor(i / c) * 100 + (i % c));
    const before = tf.memory().numTensors;
    const t = tf.tensor3d(x, [1, g * g, c]);
    const y = pixelShuffle(t, f);
    expect(y.shape).toEqual([1, 4, c * f * f]);
    const rows = y.arraySync()[0]!;
    tf.dispose([t, y]);
    expect(tf.memory().numTensors).toBe(before);
    // output token 1 is grid cell (Y=0, X=1): input tokens (0,2), (0,3), (1,2), (1,3) = 2, 3, 6, 7
    expect(rows[1]).toEqual([200, 201, 202, 300, 301, 302, 600, 601, 602, 700, 701, 702]);
    // output token 2 is (Y=1, X=0): input tokens (2,0), (2,1), (3,0), (3,1) = 8, 9, 12, 13
    expect(rows[2]).toEqual([800, 801, 802, 900, 901, 902, 1200, 1201, 1202, 1300, 1301, 1302]);
    expect(maxAbsDiff(rows.flat(), pixelShuffleRef(x, 1, g, c, f))).toBe(0);
  });

  test.each([
    [2, 4, 2],
    [6, 3, 3],
    [4, 2, 4],
  ])('grid %i x %i, factor %i: shuffle then Linear(c f^2, out) matches the reference', (g, c, f) => {
    const out = 5;
    const b = 2;
    const p = createProjector({ type: 'pixel_shuffle', inputDim: c, outputDim: out, pixelShuffleFactor: f, seed: 9 });
    try {
      expect(p.namedWeights().get('layers.0.weight')!.shape).toEqual([out, c * f * f]);
      const x = randomArray(b * g * g * c, g * 100 + f);
      const { data, shape } = run(p, x, [b, g * g, c]);
      const tokens = (g / f) ** 2;
      expect(shape).toEqual([b, tokens, out]);
      expect(p.outputTokens(g * g)).toBe(tokens);
      const shuffled = pixelShuffleRef(x, b, g, c, f);
      const ref = linearRef(shuffled, b * tokens, weights(p, 'layers.0.weight'), weights(p, 'layers.0.bias'), c * f * f, out);
      expect(maxAbsDiff(data, ref)).toBeLessThan(ATOL);
    } finally {
      p.dispose();
    }
  });

  test('rejects grids it cannot fold with a ShapeError', () => {
    const p = createProjector({ type: 'pixel_shuffle', inputDim: 2, outputDim: 2, pixelShuffleFactor: 2 });
    try {
      expect(() => p.outputTokens(17)).toThrow(ShapeError); // 16 patches + CLS: not square
      expect(() => p.outputTokens(9)).toThrow(/not divisible by factor 2/);
      const before = tf.memory().numTensors;
      const x = tf.zeros([1, 17, 2]) as tf.Tensor3D;
      expect(() => p.apply(x)).toThrow(/square patch grid/);
      x.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      p.dispose();
    }
  });
});

describe('projector life cycle', () => {
  test('outputTokens keeps the count for mlp and linear', () => {
    for (const type of ['mlp', 'linear'] as const) {
      const p = createProjector({ type, inputDim: 2, outputDim: 3 });
      expect(p.outputTokens(17)).toBe(17);
      expect(() => p.outputTokens(0)).toThrow(ShapeError);
      p.dispose();
    }
  });

  test('the same seed gives the same weights, PyTorch-style U(-1/sqrt(in), 1/sqrt(in))', () => {
    const a = createProjector({ type: 'mlp', inputDim: 16, outputDim: 8, seed: 5 });
    const b = createProjector({ type: 'mlp', inputDim: 16, outputDim: 8, seed: 5 });
    const c = createProjector({ type: 'mlp', inputDim: 16, outputDim: 8, seed: 6 });
    try {
      const w = weights(a, 'layers.2.weight');
      expect(Array.from(weights(b, 'layers.2.weight'))).toEqual(Array.from(w));
      expect(Array.from(weights(c, 'layers.2.weight'))).not.toEqual(Array.from(w));
      expect(Math.max(...Array.from(w, Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(16));
      expect(Math.max(...Array.from(weights(a, 'layers.4.weight'), Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(8));
    } finally {
      a.dispose();
      b.dispose();
      c.dispose();
    }
  });

  test('creating and disposing projectors leaves no tensor behind, and many can coexist', () => {
    const before = tf.memory().numTensors;
    const ps = PROJECTION_TYPES.flatMap((type) => [0, 1].map((seed) => createProjector({ type, inputDim: 4, outputDim: 4, seed })));
    expect(tf.memory().numTensors).toBe(before + ps.reduce((n, p) => n + p.variables.length, 0));
    for (const p of ps) p.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  test('setTrainable flips every variable', () => {
    const p = createProjector({ type: 'mlp', inputDim: 3, outputDim: 2 });
    expect(p.variables.every((v) => v.trainable)).toBe(true);
    p.setTrainable(false);
    expect(p.variables.some((v) => v.trainable)).toBe(false);
    p.dispose();
  });

  test('loadWeights overwrites by name and names the missing or mis-shaped key', () => {
    const p = createProjector({ type: 'linear', inputDim: 3, outputDim: 2 });
    const w = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const b = tf.tensor1d([0.5, -0.5]);
    const bad = tf.zeros([3, 2]);
    try {
      p.loadWeights({ 'proj.layers.0.weight': w, 'proj.layers.0.bias': b }, 'ckpt.safetensors', 'proj.');
      expect(Array.from(weights(p, 'layers.0.weight'))).toEqual([1, 2, 3, 4, 5, 6]);
      expect(Array.from(weights(p, 'layers.0.bias'))).toEqual([0.5, -0.5]);
      const missing = (() => {
        try {
          p.loadWeights(new Map([['layers.0.weight', w]]), 'ckpt.safetensors');
        } catch (e) {
          return e as ModelLoadError;
        }
        return undefined;
      })();
      expect(missing).toBeInstanceOf(ModelLoadError);
      expect(missing!.file).toBe('ckpt.safetensors');
      expect(missing!.key).toBe('layers.0.bias');
      expect(() => p.loadWeights({ 'layers.0.weight': bad, 'layers.0.bias': b })).toThrow(/layers\.0\.weight: shape \[3,2\]/);
    } finally {
      tf.dispose([w, b, bad]);
      p.dispose();
    }
  });

  test('apply rejects an input whose feature size is not inputDim', () => {
    const p = createProjector({ type: 'linear', inputDim: 3, outputDim: 2 });
    const x = tf.zeros([1, 2, 4]) as tf.Tensor3D;
    expect(() => p.apply(x)).toThrow(ShapeError);
    x.dispose();
    p.dispose();
  });

  test('unknown projector types and bad factors are config errors naming the field', () => {
    const err = (() => {
      try {
        createProjector({ type: 'conv' as never, inputDim: 2, outputDim: 2 });
      } catch (e) {
        return e as ConfigValidationError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ConfigValidationError);
    expect(err!.path).toBe('/projectionType');
    expect(err!.rule).toBe('enum');
    expect(() => createProjector({ type: 'pixel_shuffle', inputDim: 2, outputDim: 2, pixelShuffleFactor: 0 })).toThrow(/pixelShuffleFactor/);
  });
});
