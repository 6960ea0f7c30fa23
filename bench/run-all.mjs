#!/usr/bin/env node
// Runs every benchmark, then the Python reference (../shared/bench/python_reference.py, if present and its
// dependencies are installed), one after the other in the same sitting, and prints one JSON object with all
// results. The machine is shared and noisy: compare ratios from one sitting, never numbers from another day.
// Usage: npm run build && npm run bench [-- --skip-python] [-- --only image-preprocess,audio-logmel]
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : undefined;
const benches = ['image-preprocess', 'image-forward', 'audio-logmel', 'audio-encoder', 'embed-memory', 'llm', 'train'];
const results = {};

function lastJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    // several JSON lines: take the last one that parses
  }
  const lines = text.trim().split('\n').reverse();
  for (const l of lines) {
    try {
      return JSON.parse(l);
    } catch {
      // not JSON
    }
  }
  return { raw: text.slice(-2000) };
}

for (const b of benches) {
  if (only && !only.includes(b)) continue;
  process.stderr.write(`bench: ${b}...\n`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [path.join(repo, 'bench', `${b}.mjs`)], { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20 });
  results[b] = { exitCode: r.status, seconds: (Date.now() - t0) / 1000, result: lastJson(r.stdout ?? '') };
  if (r.status !== 0) results[b].stderr = (r.stderr ?? '').slice(-2000);
}

const py = path.join(repo, '..', 'shared', 'bench', 'python_reference.py');
if (!args.includes('--skip-python') && (!only || only.includes('python')) && existsSync(py)) {
  process.stderr.write('bench: python reference...\n');
  const r = spawnSync('/usr/bin/python3', [py], { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20 });
  results['python-reference'] = r.status === 0 ? lastJson(r.stdout) : { exitCode: r.status, stderr: (r.stderr ?? '').slice(-2000),
    hint: 'apt-get install -y python3-torch python3-pil python3-numpy python3-scipy (see ../shared/bench/README.md)' };
}
// The decoder reference, per shape (the shapes of bench/llm.mjs), run through a small wrapper that adds its peak RSS
// (at the end, and just before its training step, i.e. after prefill + decode) as a last JSON line on stderr.
const pyLlm = path.join(repo, '..', 'shared', 'bench', 'python_llm_reference.py');
const PY_RSS = `import builtins, json, resource, runpy, sys
mark, _imp, depth = {}, builtins.__import__, [0]
def imp(name, *a, **k):  # patch torch.zeros once the script's own import of torch is done (after its OpenBLAS settings)
    depth[0] += 1
    try:
        m = _imp(name, *a, **k)
    finally:
        depth[0] -= 1
    if name == "torch" and depth[0] == 0 and "zeros" not in mark:
        mark["zeros"] = m.zeros
        def zeros(*args, **kw):  # the training step starts with torch.zeros(..., requires_grad=True)
            if kw.get("requires_grad") and "before" not in mark:
                mark["before"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return mark["zeros"](*args, **kw)
        m.zeros = zeros
    return m
builtins.__import__ = imp
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
mb = lambda kb: round(kb * 1024 / 1e6)
sys.stderr.write(json.dumps({"maxRssMB": mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "maxRssBeforeTrainStepMB": mb(mark.get("before", 0))}) + "\\n")`;
if (!args.includes('--skip-python') && (!only || only.includes('python-llm')) && existsSync(pyLlm)) {
  for (const shape of ['smollm2-135m', 'llama-1b-4layers']) {
    process.stderr.write(`bench: python llm reference (${shape})...\n`);
    const r = spawnSync('/usr/bin/python3', ['-c', PY_RSS, pyLlm, '--shape', shape], { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20 });
    const rss = lastJson((r.stderr ?? '').trim().split('\n').pop() ?? '');
    results[`python-llm-reference-${shape}`] = r.status === 0 ? { ...lastJson(r.stdout), ...(rss.maxRssMB ? rss : {}) } : {
      exitCode: r.status, stderr: (r.stderr ?? '').slice(-2000), hint: 'apt-get install -y python3-torch python3-numpy (see ../shared/bench/README.md)' };
  }
}
// The training step of the same reference at the other sequence lengths bench/train.mjs measures (its default run at
// 256 is above), then our training steps against it: python_llm_reference.py has one training step (the ALIGNMENT
// work: forward + backward w.r.t. 64 input rows), so END2END is compared to that same number.
const train = results.train?.result?.summary;
if (train && !args.includes('--skip-python') && (!only || only.includes('python-llm')) && existsSync(pyLlm)) {
  const torchAt = { 256: results['python-llm-reference-smollm2-135m']?.train_step_tokens_per_s };
  for (const seq of train.seqs ?? []) {
    if (seq === 256) continue;
    process.stderr.write(`bench: python llm reference (smollm2-135m, prompt ${seq})...\n`);
    const r = spawnSync('/usr/bin/python3', ['-c', PY_RSS, pyLlm, '--shape', 'smollm2-135m', '--prompt', String(seq)], { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20 });
    const rss = lastJson((r.stderr ?? '').trim().split('\n').pop() ?? '');
    const key = `python-llm-reference-smollm2-135m-prompt${seq}`;
    results[key] = r.status === 0 ? { ...lastJson(r.stdout), ...(rss.maxRssMB ? rss : {}) } : { exitCode: r.status, stderr: (r.stderr ?? '').slice(-2000) };
    torchAt[seq] = results[key].train_step_tokens_per_s;
  }
  const vs = {};
  for (const [k, c] of Object.entries(train.cases ?? {})) {
    const torch = torchAt[Number(k.split('@')[1])];
    vs[k] = { ours: c.tokensPerSecond ?? null, torch: torch ?? null, ratio: c.tokensPerSecond && torch ? +(c.tokensPerSecond / torch).toFixed(3) : null,
      target: '1.0x torch', met: c.tokensPerSecond && torch ? c.tokensPerSecond >= torch : false, ...(c.failed ? { failure: c.failure } : {}) };
  }
  results['train-vs-torch'] = vs;
}
process.stdout.write(`${JSON.stringify({ date: new Date().toISOString(), results }, null, 2)}\n`);
