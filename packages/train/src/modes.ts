/**
 * The original's four training modes and what each one trains:
 *
 * | mode | encoders | projectors | LLM |
 * |---|---|---|---|
 * | `ALIGNMENT` | frozen | trained | frozen |
 * | `END2END` | frozen | trained | trained |
 * | `LM_ONLY` | frozen | frozen | trained |
 * | `FULL` | trained | trained | trained |
 *
 * Parameters are named as in the MultiMeditron checkpoint: `model.<decoder key>`,
 * `modalities_with_projection.<i>.feature_extractor.<encoder key>` and
 * `modalities_with_projection.<i>.projector.projection.<N>.{weight,bias}`.
 * @module
 */
import { ConfigValidationError } from '@multimeditron/core';
import { LLM_PREFIX, MODALITY_PREFIX, type MultiMeditronModel } from '@multimeditron/llm';
import type { NamedParameter } from './optim.js';

/** The training modes. */
export const TRAINING_MODES = ['ALIGNMENT', 'END2END', 'LM_ONLY', 'FULL'] as const;
export type TrainingMode = (typeof TRAINING_MODES)[number];

/** Which parts a mode trains. */
export interface ModeParts {
  encoders: boolean;
  projectors: boolean;
  llm: boolean;
}

/** The parts each mode trains. */
export const MODE_PARTS: Readonly<Record<TrainingMode, ModeParts>> = Object.freeze({
  ALIGNMENT: { encoders: false, projectors: true, llm: false },
  END2END: { encoders: false, projectors: true, llm: true },
  LM_ONLY: { encoders: false, projectors: false, llm: true },
  FULL: { encoders: true, projectors: true, llm: true },
});

/** Parses a mode name (case-insensitive, as the original's enum lookup is forgiving of case). */
export function parseTrainingMode(value: unknown, source = 'config'): TrainingMode {
  const v = typeof value === 'string' ? value.toUpperCase() : value;
  if (typeof v === 'string' && (TRAINING_MODES as readonly string[]).includes(v)) return v as TrainingMode;
  throw new ConfigValidationError(source, [{ path: '/training_mode', rule: 'enum', message: `must be one of ${TRAINING_MODES.join(', ')}` }]);
}

/** Every parameter of the model under its checkpoint name, with the part it belongs to. */
export function namedParameters(model: MultiMeditronModel): Array<NamedParameter & { part: keyof ModeParts }> {
  const out: Array<NamedParameter & { part: keyof ModeParts }> = [];
  for (const [k, v] of model.llm.params) out.push({ name: `${LLM_PREFIX}${k}`, variable: v, part: 'llm' });
  model.modalities.forEach((m, i) => {
    const p = `${MODALITY_PREFIX}${i}.`;
    for (const [k, v] of m.encoderVariables()) out.push({ name: `${p}feature_extractor.${k}`, variable: v, part: 'encoders' });
    for (const [k, v] of m.projector.namedWeights()) out.push({ name: `${p}projector.projection.${k.replace(/^layers\./, '')}`, variable: v, part: 'projectors' });
  });
  return out;
}

/**
 * Freezes and unfreezes the model as `mode` says (the variables' `trainable` flags) and returns the trainable
 * parameters, in checkpoint order.
 */
export function applyTrainingMode(model: MultiMeditronModel, mode: TrainingMode): NamedParameter[] {
  const parts = MODE_PARTS[mode];
  model.llm.setTrainable(parts.llm);
  for (const m of model.modalities) {
    if (parts.encoders) m.unfreezeModalityEmbedder();
    else m.freezeModalityEmbedder();
    if (parts.projectors) m.unfreezeProjection();
    else m.freezeProjection();
  }
  return namedParameters(model).filter((p) => p.variable.trainable).map(({ name, variable }) => ({ name, variable }));
}
