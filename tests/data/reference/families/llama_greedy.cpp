// Greedy continuations and top-10 log-probabilities from llama.cpp, as JSON lines, for
// kiln's family reference data. Usage: llama_greedy MODEL N_PREDICT FLASH_ATTN(0|1) < prompts
// (one prompt a line). CPU, 2 threads, F16 K/V, n_ctx 512, BOS as the model says, special
// tokens parsed; pure argmax (no stop at end-of-generation).
#include "llama.h"
#include <algorithm>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

static void set_tokens(llama_batch_ext * b, const llama_token * t, int n, llama_pos p0) {
    llama_batch_ext_clear(b);
    for (int i = 0; i < n; ++i) {
        const int32_t idx = llama_batch_ext_add_token(b, 0, t[i]);
        const llama_pos pos = p0 + i;
        llama_batch_ext_set_pos(b, idx, &pos);
    }
    llama_batch_ext_set_output_logits(b, n - 1, true);
}

int main(int argc, char ** argv) {
    std::setlocale(LC_NUMERIC, "C");
    if (argc < 4) { fprintf(stderr, "usage: %s MODEL N FA < prompts\n", argv[0]); return 1; }
    const int n_predict = atoi(argv[2]);
    const bool fa = atoi(argv[3]) != 0;
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load model\n"); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::string prompt;
    while (std::getline(std::cin, prompt)) {
        if (prompt.empty()) continue;
        int n = -llama_tokenize(vocab, prompt.c_str(), prompt.size(), NULL, 0, true, true);
        std::vector<llama_token> ids(n);
        llama_tokenize(vocab, prompt.c_str(), prompt.size(), ids.data(), n, true, true);
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = 512;
        cp.n_batch = 512;
        cp.n_threads = 2;
        cp.n_threads_batch = 2;
        cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        llama_context * ctx = llama_init_from_model(model, cp);
        llama_batch_ext * batch = llama_batch_ext_init(ctx);
        set_tokens(batch, ids.data(), n, 0);
        std::vector<llama_token> out;
        std::vector<std::pair<float, int>> top;
        int pos = 0, n_tokens = n;
        for (int step = 0; step < n_predict; ++step) {
            if (llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
            pos += n_tokens;
            const float * logits = llama_get_logits_ith(ctx, -1);
            int best = 0;
            for (int i = 1; i < n_vocab; ++i) if (logits[i] > logits[best]) best = i;
            if (step == 0) {
                float mx = logits[best];
                double sum = 0;
                for (int i = 0; i < n_vocab; ++i) sum += std::exp((double)(logits[i] - mx));
                const float lse = mx + (float)std::log(sum);
                std::vector<std::pair<float, int>> all(n_vocab);
                for (int i = 0; i < n_vocab; ++i) all[i] = {logits[i], i};
                std::partial_sort(all.begin(), all.begin() + 10, all.end(),
                    [](auto & a, auto & b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
                for (int i = 0; i < 10; ++i) top.push_back({all[i].first - lse, all[i].second});
            }
            out.push_back(best);
            llama_token t = best;
            set_tokens(batch, &t, 1, pos);
            n_tokens = 1;
        }
        printf("{\"prompt_ids\": [");
        for (int i = 0; i < n; ++i) printf("%s%d", i ? ", " : "", ids[i]);
        printf("], \"greedy_ids\": [");
        for (size_t i = 0; i < out.size(); ++i) printf("%s%d", i ? ", " : "", out[i]);
        printf("], \"top10\": [");
        for (size_t i = 0; i < top.size(); ++i) printf("%s[%d, %.6f]", i ? ", " : "", top[i].second, top[i].first);
        printf("]}\n");
        fflush(stdout);
        llama_batch_ext_free(batch);
        llama_free(ctx);
    }
    llama_model_free(model);
    return 0;
}
