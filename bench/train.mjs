// Training speed on the wasm backend, for a random-weight Llama decoder of the SmolLM2-135M shape, measured against
// the training step of ../shared/bench/python_llm_reference.py (64 trainable 'projected' input rows + the token
// embeddings of the other positions, forward over the sequence, cross-entropy over every next-token target through
// the full vocabulary head, backward w.r.t. the rows only). Cases, each in its own child process (own wasm heap, own
// peak RSS; a case that runs out of memory or time is reported with the stage it reached, not fatal):
//   alignment         ALIGNMENT step: the work of the Python reference (decoder frozen, gradient w.r.t. the rows)
//   alignment-last32  the same with the loss on the last 32 positions only (an instruction sample, short answer)
//   end2end           END2END step: decoder trainable too (all its parameters) + the rows; forward + backward,
//                     clipGradNorm(1.0) and one AdamW step (decayGroups, weight decay 0.01)
// at each --seq length (default 256, the target, and 128: at 256 the ALIGNMENT step does not fit the 4 GB wasm32
// heap). Each case: one untimed warm-up step (reported as the cold step), then --runs timed steps; tokens/s = seq /
// median step time; tf.memory().numTensors after every step (must be constant), the wasm heap and the peak RSS.
// A child is killed after --timeout s or above --max-rss MB (the CPU fallback of UnsortedSegmentSum, the gradient
// of the embedding gather, allocates without bound on the host). --profile adds a tf.profile of one ALIGNMENT step
// and of its forward alone (top kernels, matmuls by shape). --python runs the Python reference at each length
// after our cases, every round (--rounds N alternates ours and torch in one sitting).
// Prints one JSON line per case (and per Python run), then one summary line (stdout), and a table (stderr).
// Usage: node bench/train.mjs [--cases alignment,alignment-last32,end2end] [--seq 256,128] [--runs 3] [--rounds 1]
//          [--python] [--profile] [--timeout 300] [--max-rss 6000] [--backend wasm|cpu]
//          (default backend: $MULTIMEDITRON_BACKEND, else wasm)
// Imports the built packages (npx tsc -b first).
import 'reflect-metadata';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { ensureGradients, selectBackend } from '@multimeditron/core';
import { buildRandomLlama, makeIds } from './random-llama.mjs';
import { AdamW, causalLmLoss, clipGradNorm, decayGroups, lossTargets } from '@multimeditron/train';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const SHAPE = { name: 'smollm2-135m', hidden: 576, layers: 30, heads: 9, kv: 3, inter: 1536, vocab: 49152, theta: 100000 };
const CASES = ['alignment', 'alignment-last32', 'end2end'];
const casesArg = opt('cases', CASES.join(','));
const runs = Number(opt('runs', '3'));
const seqs = opt('seq', '256,128').split(',').map(Number); // the parent runs every length; a child gets one
const seq = seqs[0];
const rounds = Number(opt('rounds', '1'));
const timeoutS = Number(opt('timeout', '300'));
const maxRssMB = Number(opt('max-rss', '6000'));
const withPython = args.includes('--python');
const withProfile = args.includes('--profile');
const backend = opt('backend', process.env.MULTIMEDITRON_BACKEND?.trim().toLowerCase() || 'wasm');
const ROWS = 64; // trainable input rows, as the Python reference
const LAST = 32; // scored positions of the alignment-last32 case
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const MB = (bytes) => Math.round(bytes / 1e6);

// ---- one case (child process) --------------------------------------------------------------------------------

let peakRss = 0;
const sample = () => { peakRss = Math.max(peakRss, process.memoryUsage().rss); };
const maxRss = () => Math.max(peakRss, process.resourceUsage().maxRSS * 1024);
const wasmHeapMB = () => {
  const b = tf.engine().backendInstance;
  return b?.wasm?.HEAPU8 ? MB(b.wasm.HEAPU8.buffer.byteLength) : undefined;
};
const progress = (stage, extra = {}) => {
  sample();
  process.stderr.write(`${JSON.stringify({ stage, rssMB: MB(process.memoryUsage().rss), wasmHeapMB: wasmHeapMB(), numTensors: tf.memory().numTensors, ...extra })}\n`);
};

/** A Llama whose weights are drawn in place (normal * 0.02, norms 1, seeded), as in bench/llm.mjs. */
/**
 * The loss of one sample: `rows` [64, hidden] followed by the embeddings of ids[64:], the decoder forward without
 * logits, then the causal-LM loss of `targets` through the differentiable head. Called inside tf.variableGrads.
 */
function sampleLoss(model, rows, ids, targets) {
  const tail = model.embed([ids.slice(ROWS)]);
  const embeds = tf.concat([tf.expandDims(rows, 0), tail], 1);
  const { hiddenStates } = model.forward({ inputsEmbeds: embeds, logits: 'none' });
  return causalLmLoss(hiddenStates, targets, (h) => model.headLogits(h));
}

async function runCase(name) {
  if (!CASES.includes(name)) throw new Error(`unknown case ${name} (one of ${CASES.join(', ')})`);
  const sampler = setInterval(sample, 50);
  const choice = await selectBackend({ backend });
  const gradients = ensureGradients();
  const t0 = performance.now();
  const model = buildRandomLlama(SHAPE);
  const r = { case: name, shape: SHAPE.name, backend: choice.backend, seq, params: model.variables().reduce((n, v) => n + v.size, 0),
    buildSeconds: +((performance.now() - t0) / 1000).toFixed(1), gradientFallbacks: gradients.fallbacks };
  progress('built', { params: r.params });
  const H = SHAPE.hidden;
  const ids = makeIds(seq, SHAPE.vocab, 1);
  const labels = name === 'alignment-last32' ? ids.map((id, t) => (t >= seq - LAST ? id : -100)) : ids;
  const targets = lossTargets(labels, 1, seq);
  r.scoredTokens = targets.rows.length;
  const end2end = name === 'end2end';
  model.setTrainable(end2end);
  // as the trainer does: projections whose backward stays on the fast (untransposed) products; --plain-matmul: tfjs' own
  model.training = !process.argv.includes('--plain-matmul');
  // the 'projected' rows: small random values (a projector's output). The Python reference starts from zeros, which
  // stay exactly zero through every layer, so its gradient w.r.t. them is 316^60 * 0 = NaN (same work, same time).
  const rows = tf.variable(tf.randomNormal([ROWS, H], 0, 0.02, 'float32', 7), true, 'projected_rows');
  const named = [{ name: 'projector.rows', variable: rows }, ...(end2end ? [...model.params].map(([k, v]) => ({ name: `model.${k}`, variable: v })) : [])];
  const vars = named.map((p) => p.variable);
  r.trainableParams = vars.reduce((n, v) => n + v.size, 0);
  const optimizer = end2end ? new AdamW(decayGroups(named, 0.01)) : undefined;

  let stepsDone = 0;
  const mark = (stage) => { if (stepsDone === 0) progress(stage); }; // where the first step is (a failure names it)
  /** One training step; returns its parts in ms (the gradients are read back, so the work is finished). */
  const step = () => {
    const ts = performance.now();
    const { value, grads } = tf.variableGrads(() => sampleLoss(model, rows, ids, targets), vars);
    const loss = value.dataSync()[0];
    value.dispose();
    let gradMs;
    let optMs = 0;
    let gradNorm;
    if (!end2end) {
      grads[rows.name].dataSync(); // finish the backward (wasm is synchronous; this is a cheap read of 64 x 576)
      gradMs = performance.now() - ts;
      gradNorm = tf.tidy(() => tf.norm(grads[rows.name]).dataSync()[0]);
      tf.dispose(grads);
    } else {
      gradMs = performance.now() - ts;
      mark('end2end: forward + backward done');
      const byName = new Map(named.map((p) => [p.name, grads[p.variable.name] ?? tf.zerosLike(p.variable)]));
      const to = performance.now();
      const clipped = clipGradNorm(byName, 1.0);
      mark('end2end: clipGradNorm done');
      optimizer.step(clipped.grads, 1e-5);
      for (const g of clipped.grads.values()) g.dispose();
      rows.dataSync(); // wasm kernels run synchronously: after this read the update is done
      optMs = performance.now() - to;
      gradNorm = clipped.norm;
    }
    sample();
    stepsDone++;
    return { ms: performance.now() - ts, gradMs, optMs, loss, gradNorm };
  };

  const first = step();
  r.coldStepMs = Math.round(first.ms);
  r.firstLoss = +first.loss.toFixed(4); // ~ln(49152) = 10.80 for random weights
  r.rssAfterWarmupMB = MB(process.memoryUsage().rss);
  r.wasmHeapAfterWarmupMB = wasmHeapMB();
  progress('warm', { ms: r.coldStepMs, loss: first.loss });
  const xs = [];
  const numTensors = [tf.memory().numTensors];
  for (let i = 0; i < runs; i++) {
    const s = step();
    xs.push(s);
    numTensors.push(tf.memory().numTensors);
    progress('run', { run: i, ms: Math.round(s.ms), gradMs: Math.round(s.gradMs), optMs: Math.round(s.optMs), loss: s.loss, gradNorm: s.gradNorm });
  }
  const ms = median(xs.map((s) => s.ms));
  r.stepMs = Math.round(ms);
  r.tokensPerSecond = +(seq / (ms / 1000)).toFixed(2);
  r.runsStepMs = xs.map((s) => Math.round(s.ms));
  if (end2end) {
    r.forwardBackwardMs = Math.round(median(xs.map((s) => s.gradMs)));
    r.clipAndAdamWMs = Math.round(median(xs.map((s) => s.optMs)));
    r.optimizerStateMB = MB([...optimizer.buffers.values()].reduce((n, v) => n + v.size * 4, 0)); // exp_avg + exp_avg_sq
  }
  r.losses = xs.map((s) => +s.loss.toFixed(4));
  r.numTensorsAfterEachStep = numTensors;
  r.numTensorsStable = numTensors.every((n) => n === numTensors[0]);
  if (withProfile && name === 'alignment') r.profile = await profileAlignment(model, rows, ids, targets, vars);
  r.peakRssMB = MB(maxRss());
  r.wasmHeapMB = wasmHeapMB();
  optimizer?.dispose();
  rows.dispose();
  model.dispose();
  clearInterval(sampler);
  r.numTensorsAfterDispose = tf.memory().numTensors;
  return r;
}

/** A name for a BatchMatMul from its shapes: NN / NT (b transposed) / TN (a transposed), and [m, k] x [k, n]. */
function matmulLabel(k) {
  const [a, b] = k.inputShapes;
  const o = k.outputShapes[0];
  const [ar, ac] = a.slice(-2);
  const [br, bc] = b.slice(-2);
  const [om, on] = o.slice(-2);
  const batch = a.length > 2 ? a.slice(0, -2).reduce((x, y) => x * y, 1) : 1;
  // the transpose flags are not in the profile: every layout the shapes allow is named (square b: 'NN|NT')
  const fits = [['NN', ar === om && ac === br && bc === on, ac], ['NT', ar === om && ac === bc && br === on, ac],
    ['TN', ac === om && ar === br && bc === on, ar], ['TT', ac === om && ar === bc && br === on, ar]].filter((f) => f[1]);
  const kind = fits.map((f) => f[0]).join('|') || '?';
  const kk = fits[0]?.[2] ?? 0;
  return { label: `BatchMatMul ${kind} ${batch > 1 ? `${batch}x ` : ''}[${om}x${kk}]x[${kk}x${on}]`, flops: 2 * batch * om * on * kk };
}

/** Kernel time by kernel name (and matmuls by shape) of one tf.profile. */
function summarise(info, top) {
  const byName = new Map();
  const byMatmul = new Map();
  let total = 0;
  for (const k of info.kernels) {
    const ms = Number(k.kernelTimeMs) || 0;
    total += ms;
    const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
    e.ms += ms;
    e.calls++;
    byName.set(k.name, e);
    if (k.name === 'BatchMatMul') {
      const { label, flops } = matmulLabel(k);
      const m = byMatmul.get(label) ?? { ms: 0, calls: 0, flops: 0 };
      m.ms += ms;
      m.calls++;
      m.flops += flops;
      byMatmul.set(label, m);
    }
  }
  const rows = (m) => [...m].sort((a, b) => b[1].ms - a[1].ms).slice(0, top).map(([n, e]) => ({
    kernel: n, ms: Math.round(e.ms), calls: e.calls, share: +(e.ms / total).toFixed(3),
    ...(e.flops ? { gflops: +(e.flops / 1e9).toFixed(2), gflopsPerS: +(e.flops / 1e6 / Math.max(e.ms, 1e-3)).toFixed(1) } : {}),
  }));
  return { kernels: info.kernels.length, kernelMs: Math.round(total), peakLiveTensorMB: MB(info.peakBytes), byKernel: rows(byName), matmuls: rows(byMatmul) };
}

/** tf.profile of one ALIGNMENT step, and of its forward + loss alone (no tape): where the time goes. */
async function profileAlignment(model, rows, ids, targets, vars) {
  const tw = performance.now();
  const stepInfo = await tf.profile(() => {
    const { value, grads } = tf.variableGrads(() => sampleLoss(model, rows, ids, targets), vars);
    value.dataSync();
    tf.dispose([value, ...Object.values(grads)]);
  });
  const stepWallMs = performance.now() - tw;
  // tf.profile returns the engine's one profile object, which the next tf.profile call resets: summarise it now
  const step = { wallMs: Math.round(stepWallMs), ...summarise(stepInfo, 14) };
  const fw = performance.now();
  const fwdInfo = await tf.profile(() => {
    const l = tf.tidy(() => sampleLoss(model, rows, ids, targets));
    l.dataSync();
    l.dispose();
  });
  const fwdWallMs = performance.now() - fw;
  return { note: 'tf.profile (kernel wall times; profiling adds overhead)', step,
    forwardOnly: { wallMs: Math.round(fwdWallMs), ...summarise(fwdInfo, 8) } };
}

// ---- the Python reference ------------------------------------------------------------------------------------

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pyRef = path.join(repo, '..', 'shared', 'bench', 'python_llm_reference.py');

/** Runs the script and adds its peak RSS (ru_maxrss, prefill + decode + training step) as a last line on stderr. */
const PY_RSS = `import json, resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
sys.stderr.write(json.dumps({"maxRssMB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)}) + "\\n")`;

/** The reference's training-step tokens/s (and its other figures) at `length` tokens, or why it did not run. */
function runPython(length) {
  if (!existsSync(pyRef)) return { failed: true, error: `${pyRef} not found` };
  const t0 = Date.now();
  const c = spawnSync('/usr/bin/python3', ['-c', PY_RSS, pyRef, '--shape', SHAPE.name, '--prompt', String(length)], {
    cwd: repo, encoding: 'utf8', timeout: timeoutS * 1000, maxBuffer: 64 << 20 });
  try {
    const rss = JSON.parse((c.stderr ?? '').trim().split('\n').pop());
    return { ...JSON.parse(c.stdout), ...rss, seconds: (Date.now() - t0) / 1000 };
  } catch {
    return { failed: true, exitCode: c.status, signal: c.signal, error: (c.stderr ?? '').slice(-1000),
      hint: 'apt-get install -y python3-torch libopenblas0-pthread (without OpenBLAS torch is ~50x slower)' };
  }
}

// ---- main ----------------------------------------------------------------------------------------------------

/** Resident set of a process in MB (Linux /proc), or undefined. */
function rssOf(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round((Number(m[1]) * 1024) / 1e6) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs one case in a child process, killed after --timeout seconds or when its RSS passes --max-rss MB (the host
 * fallback of a gradient kernel can allocate without bound on the JS heap; the machine is shared).
 */
async function runChild(name, length) {
  const self = fileURLToPath(import.meta.url);
  const passOn = ['--runs', String(runs), '--seq', String(length), '--backend', backend, ...(withProfile ? ['--profile'] : []), ...(process.argv.includes('--plain-matmul') ? ['--plain-matmul'] : [])];
  const t0 = Date.now();
  const c = spawn(process.execPath, [self, '--child', name, ...passOn], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d) => { stdout += d; });
  c.stderr.on('data', (d) => { stderr += d; });
  let killed;
  let watchedPeakMB = 0;
  const watch = setInterval(() => {
    const rss = rssOf(c.pid);
    if (rss) watchedPeakMB = Math.max(watchedPeakMB, rss);
    if (!killed && rss > maxRssMB) killed = `RSS ${rss} MB passed --max-rss ${maxRssMB}`;
    else if (!killed && Date.now() - t0 > timeoutS * 1000) killed = `ran past --timeout ${timeoutS} s`;
    if (killed) c.kill('SIGKILL');
  }, 200);
  const [code, signal] = await new Promise((res) => c.on('close', (co, si) => res([co, si])));
  clearInterval(watch);
  const stderrLines = stderr.trim().split('\n');
  let r;
  try {
    r = JSON.parse(stdout.trim().split('\n').pop());
  } catch {
    // the child died (out of wasm memory), or was killed: report how far it got
    const stages = stderrLines.filter((l) => l.startsWith('{"stage"')).map((l) => JSON.parse(l));
    r = { case: name, seq: length, failed: true, exitCode: code, signal, killed, watchedPeakRssMB: watchedPeakMB,
      stages: stages.map((st) => st.stage), lastStage: stages.at(-1) ?? null, error: stderrLines.filter((l) => !l.startsWith('{"stage"') && !/^\s+at /.test(l)).slice(-4).join('\n').slice(0, 1000) };
  }
  r.seconds = (Date.now() - t0) / 1000;
  return r;
}

if (args.includes('--child')) {
  let r;
  try {
    r = await runCase(args[args.indexOf('--child') + 1]);
  } catch (e) {
    // report the heap at the failure (an exhausted or corrupted wasm heap shows here), then fail
    progress('error', { message: String(e?.message ?? e).slice(0, 300), liveTensorMB: MB(tf.memory().numBytes), peakRssMB: MB(maxRss()) });
    throw e;
  }
  process.stdout.write(`${JSON.stringify(r)}\n`);
} else {
  const names = casesArg.split(',');
  for (const n of names) if (!CASES.includes(n)) throw new Error(`unknown case ${n} (one of ${CASES.join(', ')})`);
  const t0 = Date.now();
  const results = new Map(); // `${case}@${seq}` -> runs
  const python = new Map(); // seq -> runs
  for (let round = 0; round < rounds; round++) {
    for (const length of seqs) {
      for (const name of names) {
        process.stderr.write(`train bench: round ${round + 1}, ${name}, seq ${length}...\n`);
        const r = await runChild(name, length);
        r.round = round + 1;
        process.stdout.write(`${JSON.stringify(r)}\n`);
        results.set(`${name}@${length}`, [...(results.get(`${name}@${length}`) ?? []), r]);
      }
      if (withPython) {
        process.stderr.write(`train bench: round ${round + 1}, python reference, seq ${length}...\n`);
        const p = runPython(length);
        p.round = round + 1;
        process.stdout.write(`${JSON.stringify({ case: 'python-reference', seq: length, ...p })}\n`);
        python.set(length, [...(python.get(length) ?? []), p]);
      }
    }
  }
  const torch = {};
  for (const [length, ps] of python) {
    const ok = ps.filter((p) => !p.failed);
    torch[length] = ok.length ? { trainStepTokensPerSecond: +median(ok.map((p) => p.train_step_tokens_per_s)).toFixed(2),
      runs: ok.map((p) => +p.train_step_tokens_per_s.toFixed(1)), prefillTokensPerSecond: +median(ok.map((p) => p.prefill_tokens_per_s)).toFixed(1),
      maxRssMB: Math.max(...ok.map((p) => p.maxRssMB ?? 0)) } : { failed: ps.length };
  }
  const summary = { backend, cpus: os.cpus().length, node: process.version, seqs, runs, rounds, seconds: (Date.now() - t0) / 1000, torch, cases: {} };
  for (const [key, rs] of results) {
    const ok = rs.filter((r) => !r.failed);
    const length = Number(key.split('@')[1]);
    const tps = ok.length ? median(ok.map((r) => r.tokensPerSecond)) : undefined;
    const ref = torch[length]?.trainStepTokensPerSecond;
    const bad = rs.find((r) => r.failed);
    summary.cases[key] = {
      tokensPerSecond: tps, runs: ok.map((r) => r.tokensPerSecond), stepMs: ok.length ? median(ok.map((r) => r.stepMs)) : undefined,
      coldStepMs: ok.length ? median(ok.map((r) => r.coldStepMs)) : undefined,
      peakRssMB: ok.length ? Math.max(...ok.map((r) => r.peakRssMB)) : undefined,
      numTensorsStable: ok.every((r) => r.numTensorsStable), failed: rs.filter((r) => r.failed).length,
      ...(bad ? { failure: bad.killed ?? bad.lastStage?.message ?? bad.error, failedAtStage: bad.lastStage?.stage, failedWasmHeapMB: bad.lastStage?.wasmHeapMB } : {}),
      // python_llm_reference.py has one training step (the ALIGNMENT work); END2END is compared to that same number
      ...(tps && ref ? { vsTorch: +(tps / ref).toFixed(3), targetMet: tps >= ref } : {}),
    };
  }
  process.stdout.write(`${JSON.stringify({ summary })}\n`); // one line, last: bench/run-all.mjs reads the last JSON line
  const pad = (v, n) => String(v ?? '-').padEnd(n);
  const lines = [`${pad('case@seq', 22)}${pad('tokens/s', 10)}${pad('step ms', 9)}${pad('cold ms', 9)}${pad('peak RSS MB', 13)}${pad('vs torch', 10)}`];
  for (const [n, c] of Object.entries(summary.cases)) {
    lines.push(`${pad(n, 22)}${pad(c.tokensPerSecond, 10)}${pad(c.stepMs, 9)}${pad(c.coldStepMs, 9)}${pad(c.peakRssMB, 13)}${pad(c.vsTorch ? `${c.vsTorch}x` : '', 10)}${c.failed ? `FAILED: ${String(c.failure).slice(0, 80)}` : ''}`);
  }
  for (const [length, t] of Object.entries(torch)) {
    if (t.trainStepTokensPerSecond) lines.push(`torch training step @${length} (python_llm_reference.py): ${t.trainStepTokensPerSecond} tokens/s (runs ${t.runs.join(', ')}), peak RSS ${t.maxRssMB} MB`);
  }
  process.stderr.write(`${lines.join('\n')}\n`);
}
