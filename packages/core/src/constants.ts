/**
 * Constants shared with the Python original (multimeditron.model.constants).
 * @module
 */

/** Key of a modality's type in a sample's `modalities` entries. */
export const MODALITY_TYPE_KEY = 'type';
/** Key of a modality's value (path, bytes, ...) in a sample's `modalities` entries. */
export const MODALITY_VALUE_KEY = 'value';
/** Key under which a processor reports how many token slots a modality takes. */
export const NUM_EMBEDDINGS_KEY = 'num_embeddings';
/** Key of position ids in a collated batch. */
export const POSITION_IDS_KEY = 'position_ids';
/** Key of the text of a pretraining sample. */
export const TEXT_KEY = 'text';
/** Key of the turns of an instruction sample. */
export const CONVERSATIONS_KEY = 'conversations';
/** Key of the list of modalities of a sample. */
export const MODALITIES_KEY = 'modalities';
/** Label value ignored by the loss. */
export const IGNORE_TOKEN_INDEX = -100;
/** Default placeholder token, one per modality in the text. Configurable. */
export const DEFAULT_ATTACHMENT_TOKEN = '<|reserved_special_token_0|>';
/** The plugin API version this core implements. Plugins declare the version they were written for. */
export const PLUGIN_API_VERSION = 1;
/** Name of the package.json field that marks plugins and lists a host's plugins. */
export const MANIFEST_FIELD = 'multimeditron';
