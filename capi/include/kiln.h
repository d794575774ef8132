/* kiln: embed the kiln inference engine in C.
 *
 * Generated from capi/src/lib.rs by cbindgen (capi/cbindgen.toml); do not edit by hand.
 * Regenerate with: KILN_BLESS=1 cargo test -p kiln-capi --test header
 *
 * Link with libkiln.a (plus -lpthread -ldl -lm) or libkiln.so. Every call that can fail
 * returns 0 (KILN_OK) or a negative kiln_status; kiln_last_error() gives the message. */

#ifndef KILN_H
#define KILN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Status codes returned by every call that can fail (0 is success).
typedef enum kiln_status {
  KILN_OK = 0,
  // A required pointer argument was NULL (or misaligned).
  KILN_ERR_NULL_ARGUMENT = -1,
  // An argument is out of range or malformed (bad UTF-8, bad sampling parameter,
  // empty prompt, token id outside the vocabulary, unknown backend name).
  KILN_ERR_INVALID_ARGUMENT = -2,
  // The model file could not be read (missing, unreadable).
  KILN_ERR_IO = -3,
  // The model file is not a valid or supported model.
  KILN_ERR_MODEL = -4,
  // The backend failed or is not in this build.
  KILN_ERR_BACKEND = -5,
  // The memory budget cannot hold the model, or an allocation failed.
  KILN_ERR_OUT_OF_MEMORY = -6,
  // The context (or the KV page pool) is full.
  KILN_ERR_CONTEXT_FULL = -7,
  // The output buffer is too small; the size needed was written.
  KILN_ERR_BUFFER_TOO_SMALL = -8,
  // The session is already generating on another thread.
  KILN_ERR_BUSY = -9,
  // The call needs something this build of the library was built without
  // (constrained generation: the cargo feature `structured`).
  KILN_ERR_UNSUPPORTED = -10,
  // Any other engine error.
  KILN_ERR_INTERNAL = -99,
  // A panic inside the library was caught; the handle involved should be freed.
  KILN_ERR_PANIC = -100,
} kiln_status;

// Why a generation stopped.
typedef enum kiln_stop_reason {
  // An end-of-generation token was sampled.
  KILN_STOP_EOG = 0,
  // `max_tokens` were generated.
  KILN_STOP_LENGTH = 1,
  // The context is full.
  KILN_STOP_CONTEXT_FULL = 2,
  // The callback returned non-zero, or `kiln_cancel` was called.
  KILN_STOP_CANCELLED = 3,
} kiln_stop_reason;

// What the grammar of `kiln_generate_constrained` is written in.
typedef enum kiln_grammar_kind {
  // A JSON schema (the output is one JSON value valid against it).
  KILN_GRAMMAR_JSON_SCHEMA = 0,
  // A Lark grammar in llguidance's dialect (`start: ...`; `%json {...}` embeds a
  // schema).
  KILN_GRAMMAR_LARK = 1,
} kiln_grammar_kind;

// A loaded model (weights memory-mapped, tokenizer ready). Opaque.
typedef struct kiln_model kiln_model;

// A model compiled for a backend, with its KV cache: one generation at a time. Opaque.
typedef struct kiln_session kiln_session;

// How a session is built. Get the defaults from `kiln_session_default_params()`.
typedef struct kiln_session_params {
  // Positions the context holds; 0 takes the model's training context.
  uint32_t n_ctx;
  // Bytes the session may allocate (arena, KV pages, buffers; mapped weights are not
  // counted); 0 for no budget. The KV pool takes what is left; too small is an error.
  uint64_t mem_budget;
  // Store the KV cache in f16 instead of FP8 E4M3.
  bool kv_f16;
  // Backend name ("cpu", "ref", ...), or NULL for the best one in this build.
  const char *backend;
  // Speculative decoding with a draft model: a model with the same vocabulary (the
  // session keeps it alive), run on the session's backend; NULL for none.
  const struct kiln_model *draft;
  // Guesses verified per decoding step at most, of the draft model or of prompt
  // lookup (fewer while they keep failing); 0 takes 4 with a draft model, else 16.
  uint32_t draft_n;
} kiln_session_params;

// How to sample. Get the defaults from `kiln_generate_default_params()`.
typedef struct kiln_generate_params {
  // Stop after this many generated tokens.
  uint32_t max_tokens;
  // 0 is greedy.
  float temperature;
  // 0 keeps every token.
  uint32_t top_k;
  float top_p;
  float min_p;
  uint64_t seed;
  // Keep going through end-of-generation tokens.
  bool ignore_eos;
  // Speculative decoding by prompt lookup: guess the tokens that followed the last
  // `lookup` tokens (1 to 16) where they occur earlier in the text. 0: the session's
  // draft model if it has one, else no speculation. Greedy output is the same either
  // way; sampled output has the same distribution.
  uint32_t lookup;
} kiln_generate_params;

// Called for every generated token with its text (`len` bytes of UTF-8, NUL-terminated;
// possibly empty while a character is split across tokens). `token` is -1 for one final
// call carrying text held back at the end. Return 0 to go on, non-zero to stop.
typedef int (*kiln_token_callback)(void *user, int32_t token, const char *piece, size_t len);

// What a generation did.
typedef struct kiln_generation {
  uint32_t n_prompt;
  uint32_t n_generated;
  // A `kiln_stop_reason`.
  int stop_reason;
  // From the start of prefill to the first sampled token.
  double ttft_ms;
  double prefill_tok_s;
  double decode_tok_s;
  // Speculative decoding: decoding steps after the first token, guesses verified in
  // them and guesses kept (0 without speculation).
  uint32_t n_steps;
  uint32_t n_drafted;
  uint32_t n_accepted;
} kiln_generation;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The library's version, e.g. "0.1.0" (static; never NULL).
const char *kiln_version(void);

// The message of this thread's last failed call ("" after a successful one). Valid
// until the next kiln call on this thread; never NULL.
const char *kiln_last_error(void);

// Load a GGUF model (memory-mapped; weights are used in place). On success `*out` is a
// new model to release with `kiln_model_free`; on failure it is set to NULL.
//
// # Safety
// `path` must be NULL or a NUL-terminated string; `out` must be NULL or point to a
// writable `kiln_model*`.
int kiln_model_load(const char *path, struct kiln_model **out);

// Release a model (NULL is ignored). Sessions created on it keep it alive until they
// are freed.
//
// # Safety
// `model` must be NULL or a model from `kiln_model_load` not freed yet.
void kiln_model_free(struct kiln_model *model);

// Vocabulary size of a model, or a negative status.
//
// # Safety
// `model` must be NULL or a live model.
int32_t kiln_model_n_vocab(const struct kiln_model *model);

// Tokenize UTF-8 `text`. `add_special` adds BOS (and EOS) where the model asks for it,
// as `kiln run` does; `parse_special` turns texts like "<|im_start|>" into their control
// tokens. Writes at most `capacity` ids to `tokens` and the count to `*n_tokens`; when
// `capacity` is too small, nothing is written, `*n_tokens` is the count needed and the
// result is `KILN_ERR_BUFFER_TOO_SMALL` (`tokens` may be NULL when `capacity` is 0).
//
// # Safety
// `model` must be NULL or a live model, `text` NULL or NUL-terminated, `tokens` NULL or
// writable for `capacity` ids, `n_tokens` NULL or writable.
int kiln_tokenize(const struct kiln_model *model,
                  const char *text,
                  bool add_special,
                  bool parse_special,
                  int32_t *tokens,
                  size_t capacity,
                  size_t *n_tokens);

// Defaults: the model's context, no memory budget, FP8 KV cache, the best backend, no
// draft model.
struct kiln_session_params kiln_session_default_params(void);

// Defaults of `kiln run`: 128 tokens, temperature 0.8, top-k 40, top-p 0.95, min-p 0.05,
// seed 0, no prompt lookup.
struct kiln_generate_params kiln_generate_default_params(void);

// Create a session on `model` (`params` NULL for the defaults): compiles the model for
// the backend and sizes its memory. On failure `*out` is NULL.
//
// # Safety
// `model` must be NULL or a live model, `params` NULL or a valid struct (its `backend`
// NULL or NUL-terminated), `out` NULL or writable.
int kiln_session_create(const struct kiln_model *model,
                        const struct kiln_session_params *params,
                        struct kiln_session **out);

// Release a session (NULL is ignored). Not while a call on it runs on another thread.
//
// # Safety
// `session` must be NULL or a session from `kiln_session_create` not freed yet.
void kiln_session_free(struct kiln_session *session);

// Ask the generation running on `session` to stop after the current token (from any
// thread). A generation started later is not affected.
//
// # Safety
// `session` must be NULL or a live session.
int kiln_cancel(const struct kiln_session *session);

// Generate from `prompt` (ids from `kiln_tokenize`) on a fresh context, calling
// `callback` (may be NULL) for every token as soon as it is sampled. `params` NULL takes
// the defaults; `out` (may be NULL) receives counts, the stop reason and timings.
//
// # Safety
// `session` must be NULL or a live session, `prompt` NULL or readable for `n_prompt`
// ids, `params` NULL or valid, `out` NULL or writable; `callback` must be safe to call
// with `user`.
int kiln_generate(const struct kiln_session *session,
                  const int32_t *prompt,
                  size_t n_prompt,
                  const struct kiln_generate_params *params,
                  kiln_token_callback callback,
                  void *user,
                  struct kiln_generation *out);

// `kiln_generate` with the output held to a grammar: `kind` a `kiln_grammar_kind`,
// `grammar` its NUL-terminated text. Only tokens that keep the output inside the
// grammar are sampled, and the generation ends (KILN_STOP_EOG) when the grammar is
// complete. A constrained generation does not speculate: `params->lookup` must be 0 and
// a session's draft model is not used. The session keeps its vocabulary's token trie
// after the first call (it is built once).
//
// A grammar that does not compile is KILN_ERR_INVALID_ARGUMENT with the reason in
// `kiln_last_error()`. A library built without structured outputs (the edge build; the
// cargo feature `structured` adds them) returns KILN_ERR_UNSUPPORTED.
//
// # Safety
// As `kiln_generate`; `grammar` must be NULL or a NUL-terminated string.
int kiln_generate_constrained(const struct kiln_session *session,
                              const int32_t *prompt,
                              size_t n_prompt,
                              const struct kiln_generate_params *params,
                              int kind,
                              const char *grammar,
                              kiln_token_callback callback,
                              void *user,
                              struct kiln_generation *out);

// Bytes the session's engine allocated (arena, KV pages, buffers; mapped weights not
// counted; a draft model's included), or 0 for a runner that does not report it.
//
// # Safety
// `session` must be NULL or a live session not generating on another thread.
int kiln_session_memory(const struct kiln_session *session, uint64_t *bytes);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* KILN_H */
