/* generate.c: kiln's C API in one small program.
 *
 *   generate MODEL PROMPT [N]     greedy-generate N tokens (default 32): the text is
 *                                 streamed to stdout, then a last line "tokens: ID ID ..."
 *   generate --bad-calls MODEL    make deliberately bad calls (NULL pointers, a missing
 *                                 file, a budget too small); exit 0 when each one returns
 *                                 its error code and a message instead of crashing
 *
 * Build (from the workspace root, after `cargo build --release -p kiln-capi`):
 *   cc -std=c99 -Wall -Icapi/include capi/examples/generate.c target/release/libkiln.a \
 *      -lpthread -ldl -lm -o generate
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"

#define MAX_TOKENS 4096

struct collected {
    int32_t ids[MAX_TOKENS];
    size_t n;
};

/* Called for every token as soon as it is sampled; returning non-zero would stop. */
static int on_token(void *user, int32_t token, const char *piece, size_t len) {
    struct collected *out = user;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    if (token >= 0 && out->n < MAX_TOKENS) {
        out->ids[out->n++] = token;
    }
    return 0;
}

static int fail(const char *what, int status) {
    fprintf(stderr, "error: %s: %s (status %d)\n", what, kiln_last_error(), status);
    return 1;
}

static int generate(const char *model_path, const char *prompt, int n_predict) {
    kiln_model *model = NULL;
    kiln_session *session = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 1;

    int status = kiln_model_load(model_path, &model);
    if (status != KILN_OK) return fail("load", status);

    /* Ask for the size first, then tokenize into a buffer of that size. */
    status = kiln_tokenize(model, prompt, true, true, NULL, 0, &n_ids);
    if (status != KILN_ERR_BUFFER_TOO_SMALL && status != KILN_OK) {
        rc = fail("tokenize", status);
        goto done;
    }
    ids = malloc((n_ids ? n_ids : 1) * sizeof *ids);
    if (!ids) goto done;
    status = kiln_tokenize(model, prompt, true, true, ids, n_ids, &n_ids);
    if (status != KILN_OK) {
        rc = fail("tokenize", status);
        goto done;
    }

    status = kiln_session_create(model, NULL, &session);
    if (status != KILN_OK) {
        rc = fail("session", status);
        goto done;
    }

    kiln_generate_params params = kiln_generate_default_params();
    params.temperature = 0.0f; /* greedy */
    params.max_tokens = (uint32_t)n_predict;
    static struct collected out;
    kiln_generation result;
    status = kiln_generate(session, ids, n_ids, &params, on_token, &out, &result);
    if (status != KILN_OK) {
        rc = fail("generate", status);
        goto done;
    }
    printf("\ntokens:");
    for (size_t i = 0; i < out.n; i++) printf(" %d", out.ids[i]);
    printf("\n");
    fprintf(stderr, "%u prompt tokens, %u generated (stop %d), ttft %.1f ms, decode %.1f tok/s\n",
            result.n_prompt, result.n_generated, result.stop_reason, result.ttft_ms,
            result.decode_tok_s);
    rc = 0;

done:
    free(ids);
    kiln_session_free(session);
    kiln_model_free(model);
    return rc;
}

/* One bad call: it must return `expected` and leave a message. */
static int expect(const char *what, int status, int expected) {
    const char *msg = kiln_last_error();
    int ok = status == expected && msg != NULL && msg[0] != '\0';
    printf("%s %s: status %d (expected %d): %s\n", ok ? "ok  " : "FAIL", what, status,
           expected, msg ? msg : "(null)");
    return ok ? 0 : 1;
}

static int bad_calls(const char *model_path) {
    int failures = 0;
    kiln_model *model = (kiln_model *)0x1; /* must be reset to NULL on failure */
    kiln_session *session = NULL;
    size_t n = 0;
    int32_t ids[8];

    failures += expect("load(NULL path)", kiln_model_load(NULL, &model), KILN_ERR_NULL_ARGUMENT);
    failures += model != NULL;
    failures += expect("load(path, NULL out)", kiln_model_load(model_path, NULL),
                       KILN_ERR_NULL_ARGUMENT);
    failures += expect("load(missing file)",
                       kiln_model_load("/nonexistent/kiln-missing.gguf", &model), KILN_ERR_IO);
    failures += model != NULL;
    failures += expect("tokenize(NULL model)", kiln_tokenize(NULL, "hi", true, true, ids, 8, &n),
                       KILN_ERR_NULL_ARGUMENT);
    failures += expect("session(NULL model)", kiln_session_create(NULL, NULL, &session),
                       KILN_ERR_NULL_ARGUMENT);
    failures += expect("generate(NULL session)",
                       kiln_generate(NULL, ids, 1, NULL, NULL, NULL, NULL),
                       KILN_ERR_NULL_ARGUMENT);
    failures += expect("cancel(NULL)", kiln_cancel(NULL), KILN_ERR_NULL_ARGUMENT);
    kiln_model_free(NULL);
    kiln_session_free(NULL);

    int status = kiln_model_load(model_path, &model);
    if (status != KILN_OK) return fail("load", status) + failures;
    failures += expect("tokenize(NULL text)", kiln_tokenize(model, NULL, true, true, ids, 8, &n),
                       KILN_ERR_NULL_ARGUMENT);
    failures += expect("tokenize(buffer too small)",
                       kiln_tokenize(model, "The capital of France is", true, true, ids, 1, &n),
                       KILN_ERR_BUFFER_TOO_SMALL);

    kiln_session_params sp = kiln_session_default_params();
    sp.mem_budget = 1000; /* bytes: far too small */
    failures += expect("session(budget too small)", kiln_session_create(model, &sp, &session),
                       KILN_ERR_OUT_OF_MEMORY);
    failures += session != NULL;
    sp = kiln_session_default_params();
    sp.backend = "no-such-backend";
    failures += expect("session(unknown backend)", kiln_session_create(model, &sp, &session),
                       KILN_ERR_INVALID_ARGUMENT);

    status = kiln_session_create(model, NULL, &session);
    if (status != KILN_OK) {
        kiln_model_free(model);
        return fail("session", status) + failures;
    }
    failures += expect("generate(NULL prompt)", kiln_generate(session, NULL, 3, NULL, NULL, NULL, NULL),
                       KILN_ERR_NULL_ARGUMENT);
    failures += expect("generate(empty prompt)", kiln_generate(session, ids, 0, NULL, NULL, NULL, NULL),
                       KILN_ERR_INVALID_ARGUMENT);
    int32_t bad[2] = {1, 1 << 30};
    failures += expect("generate(token out of range)",
                       kiln_generate(session, bad, 2, NULL, NULL, NULL, NULL),
                       KILN_ERR_INVALID_ARGUMENT);
    /* The session still works after the bad calls. */
    kiln_generate_params gp = kiln_generate_default_params();
    gp.max_tokens = 2;
    kiln_generation result;
    status = kiln_generate(session, bad, 1, &gp, NULL, NULL, &result);
    if (status != KILN_OK || result.n_generated == 0) failures += fail("generate after errors", status);

    kiln_session_free(session);
    kiln_model_free(model);
    printf("%d failure(s)\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    fprintf(stderr, "kiln %s\n", kiln_version());
    if (argc == 3 && strcmp(argv[1], "--bad-calls") == 0) return bad_calls(argv[2]);
    if (argc == 3 || argc == 4) return generate(argv[1], argv[2], argc == 4 ? atoi(argv[3]) : 32);
    fprintf(stderr, "usage: %s MODEL PROMPT [N] | --bad-calls MODEL\n", argv[0]);
    return 2;
}
