// A paged batch for the harnesses of the paged kernels, laid out as PageTable.cs and PagedAttentionCuda.Keys lay it out:
// sequences of given lengths and new-query counts in a pool of pages of page_size rows; the pages shuffled (out of order,
// not contiguous), the first pages of some sequences shared with another (a fork's common prefix), spare pages that no
// sequence uses. Slots no sequence uses (spare pages, the tail of each last page) are the harness's to fill with garbage.
#pragma once
#include <algorithm>
#include <array>
#include <numeric>
#include <random>
#include <vector>

struct PagedBatch {
    int page_size = 1, pages_per_sequence = 1, pool_pages = 0, tokens = 0, max_length = 0;
    std::vector<int> lengths, queries;  // per sequence: keys (new tokens included) and new queries
    std::vector<int> starts;            // per sequence: its first packed query token
    std::vector<int> table;             // [S, pages_per_sequence], −1 padding
    std::vector<int> sequence, visible; // per packed query token: its sequence and the keys it sees
    std::vector<unsigned char> used;    // per pool slot: 1 where some sequence's token lives

    int count() const { return (int)lengths.size(); }
    // The pool slot of key j of sequence s.
    size_t slot(int s, int j) const { return (size_t)table[(size_t)s * pages_per_sequence + j / page_size] * page_size + j % page_size; }
    size_t slots() const { return (size_t)pool_pages * page_size; }
};

// shares: {a, b, n}: sequence b's first n pages are sequence a's (both must fill them: n·page_size ≤ both lengths).
inline PagedBatch make_paged_batch(int page_size, std::vector<int> lengths, std::vector<int> queries, std::vector<std::array<int, 3>> shares, int spare,
                                   unsigned seed)
{
    PagedBatch p;
    p.page_size = page_size;
    p.lengths = std::move(lengths);
    p.queries = std::move(queries);
    const int S = p.count();
    for (int s = 0; s < S; ++s) p.pages_per_sequence = std::max(p.pages_per_sequence, (p.lengths[s] + page_size - 1) / page_size);
    p.pages_per_sequence += 1; // a padding entry even for the longest
    p.table.assign((size_t)S * p.pages_per_sequence, -1);
    int next = 0;
    for (int s = 0; s < S; ++s) {
        const int used = (p.lengths[s] + page_size - 1) / page_size;
        for (int i = 0; i < used; ++i) p.table[(size_t)s * p.pages_per_sequence + i] = next++;
    }
    for (auto [a, b, n] : shares) {
        for (int i = 0; i < n; ++i) p.table[(size_t)b * p.pages_per_sequence + i] = p.table[(size_t)a * p.pages_per_sequence + i];
    }
    // Renumber the pages in use, and the spares, in a random order over the pool.
    p.pool_pages = next + spare;
    std::vector<int> order(p.pool_pages);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    for (auto& e : p.table) if (e >= 0) e = order[e];
    p.used.assign(p.slots(), 0);
    for (int s = 0; s < S; ++s) {
        p.max_length = std::max(p.max_length, p.lengths[s]);
        for (int j = 0; j < p.lengths[s]; ++j) p.used[p.slot(s, j)] = 1;
        p.starts.push_back(p.tokens);
        for (int i = 0; i < p.queries[s]; ++i) {
            p.sequence.push_back(s);
            p.visible.push_back(p.lengths[s] - p.queries[s] + i + 1);
        }
        p.tokens += p.queries[s];
    }
    return p;
}
