// cuda/paged_cache.cu (paged_write, paged_copy) under the emulation of cuda_shim.h, in fp32, bf16 and fp16 rows, launched as
// PagedAttentionCuda.Write and Copy launch them: the unit is the widest of 16, 4 and 2 bytes dividing the row (the page)
// with both addresses aligned to it, on Elementwise.Grid (256 threads; one multiprocessor here, so the grid-stride loops run
// several times). The reference is the pool with the rows written or the page copied, element by element; a copy must be
// exact (every bit), and every other slot must keep its old value.
// Writes: a step's new tokens of several sequences (a single decode token, a prompt chunk across page boundaries, a sequence
// of one token) into pools of shuffled pages, some shared by two sequences; slots from the page table as PagedAttention.Write
// computes them. Copies: copy on write of a page, and a transnormer state row cleared from the zero row.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "launch_plans.h"
#include "paged_layout.h"
#include "paged_cache.emu.cpp"
#include <cstring>

// PagedAttentionCuda.UnitFor: the widest unit dividing `bytes` with both addresses aligned to it.
static int unit_for(size_t bytes, const void* a, const void* b)
{
    for (int unit : {16, 4, 2}) {
        if (bytes % unit == 0 && (uintptr_t)a % unit == 0 && (uintptr_t)b % unit == 0) return unit;
    }
    return 0;
}

// Elements whose bits differ between got and want (a copy must be exact).
template <typename T>
static int check_exact(const char* name, const std::vector<T>& got, const std::vector<T>& want)
{
    size_t wrong = 0;
    for (size_t i = 0; i < want.size(); ++i) wrong += std::memcmp(&got[i], &want[i], sizeof(T)) != 0;
    printf("  %-6s %s (%zu of %zu elements differ)\n", name, wrong == 0 ? "ok" : "FAIL", wrong, want.size());
    return wrong != 0;
}

template <typename U, typename T>
static void launch_write(std::vector<T>& pool, const std::vector<T>& values, const std::vector<int>& slots, size_t row_bytes)
{
    const int row_units = (int)(row_bytes / sizeof(U));
    const long long n = (long long)row_units * (long long)slots.size();
    emu_launch(elementwise_grid(1, n), dim3{elementwise_threads}, [&] {
        paged_write<U>(reinterpret_cast<U*>(pool.data()), reinterpret_cast<const U*>(values.data()), slots.data(), (index_t)slots.size(), row_units); });
}

template <typename U, typename T>
static void launch_copy(std::vector<T>& pool, int source, int destination, size_t page_bytes)
{
    const index_t page_units = (index_t)(page_bytes / sizeof(U));
    emu_launch(elementwise_grid(1, page_units), dim3{elementwise_threads}, [&] {
        paged_copy<U>(reinterpret_cast<U*>(pool.data()), source, destination, page_units); });
}

// news[s]: the new tokens of sequence s, the last of its lengths[s] (they must not fall in a shared page).
struct W { int page_size; std::vector<int> lengths, news; std::vector<std::array<int, 3>> shares; int row; };

template <typename T>
int run_write(const W& c)
{
    const PagedBatch pb = make_paged_batch(c.page_size, c.lengths, c.news, c.shares, 2, (unsigned)(c.row * 7 + c.page_size));
    std::mt19937 rng(c.row + pb.tokens);
    auto pool = random_values<T>(rng, pb.slots() * c.row), values = random_values<T>(rng, (size_t)pb.tokens * c.row);
    std::vector<int> slots(pb.tokens);
    auto want = pool;
    for (int s = 0; s < pb.count(); ++s) {
        for (int i = 0; i < pb.queries[s]; ++i) {
            const int t = pb.starts[s] + i;
            slots[t] = (int)pb.slot(s, pb.lengths[s] - pb.queries[s] + i);
            std::copy_n(values.begin() + (size_t)t * c.row, c.row, want.begin() + (size_t)slots[t] * c.row);
        }
    }
    const size_t row_bytes = (size_t)c.row * sizeof(T);
    const int unit = unit_for(row_bytes, pool.data(), values.data());
    printf("%s write: page %d, %d sequences (lengths", type_name<T>(), pb.page_size, pb.count());
    for (int s = 0; s < pb.count(); ++s) printf(" %d/%dnew", pb.lengths[s], pb.queries[s]);
    printf("), pool %d pages, rows of %d (%zu bytes, %d-byte units)\n", pb.pool_pages, c.row, row_bytes, unit);
    if (unit == 16) launch_write<paged_unit16>(pool, values, slots, row_bytes);
    else if (unit == 4) launch_write<unsigned int>(pool, values, slots, row_bytes);
    else launch_write<unsigned short>(pool, values, slots, row_bytes);
    return check_exact("pool", pool, want);
}

// A pool of `pages` pages of `page` elements: page source copied onto destination.
struct C { int pages, page, source, destination; bool zero_source; const char* what; };

template <typename T>
int run_copy(const C& c)
{
    std::mt19937 rng(c.pages * 31 + c.page);
    auto pool = random_values<T>(rng, (size_t)c.pages * c.page);
    if (c.zero_source) std::fill_n(pool.begin() + (size_t)c.source * c.page, c.page, from_float<T>(0.0f));
    auto want = pool;
    std::copy_n(pool.begin() + (size_t)c.source * c.page, c.page, want.begin() + (size_t)c.destination * c.page);
    const size_t page_bytes = (size_t)c.page * sizeof(T);
    const int unit = unit_for(page_bytes, pool.data(), pool.data());
    printf("%s copy (%s): page %d → %d of %d, %zu bytes a page, %d-byte units\n", type_name<T>(), c.what, c.source, c.destination, c.pages, page_bytes, unit);
    if (unit == 16) launch_copy<paged_unit16>(pool, c.source, c.destination, page_bytes);
    else if (unit == 4) launch_copy<unsigned int>(pool, c.source, c.destination, page_bytes);
    else launch_copy<unsigned short>(pool, c.source, c.destination, page_bytes);
    return check_exact("pool", pool, want);
}

int main()
{
    int fails = 0;
    auto writes = [](W c) { return emu_cases([&] { return run_write<float>(c); }, [&] { return run_write<bf16_t>(c); }, [&] { return run_write<half_t>(c); }); };
    auto copies = [](C c) { return emu_cases([&] { return run_copy<float>(c); }, [&] { return run_copy<bf16_t>(c); }, [&] { return run_copy<half_t>(c); }); };
    // A decode step: one token each for a sequence of one token, one ending a page, one starting a page, one whose first two
    // pages it shares with another. Rows of 8 elements (16 or 32 bytes: 16-byte units).
    fails += writes({4, {1, 8, 9, 11}, {1, 1, 1, 1}, {{2, 3, 2}}, 8});
    // A prompt chunk of 20 across three pages of 8 beside a decode token; rows of 6 (12 or 24 bytes: 4-byte units).
    fails += writes({8, {30, 2}, {20, 1}, {}, 6});
    // Rows of 3 elements (2-byte units in 16 bits, 4-byte ones in fp32), pages of 1 token, 8,406 units: more than the grid's
    // 32 blocks of 256 threads, so the grid-stride loop goes round twice.
    fails += writes({1, {3000, 3}, {2800, 2}, {}, 3});
    // Copy on write of a page of 4 tokens of a 2 × 4 row; a page of 3 × 3 elements (2-byte units in 16 bits).
    fails += copies({6, 4 * 8, 5, 1, false, "copy on write"});
    fails += copies({4, 3 * 3, 0, 3, false, "copy on write"});
    // A transnormer state slot [H 9, d' 64, d 64] cleared from the pool's zero row (the last); in fp32 9,216 units, so the
    // grid-stride loop of 32 blocks goes round twice.
    fails += copies({3, 9 * 64 * 64, 2, 0, true, "state row cleared"});
    printf("%d failing\n", fails);
    return fails != 0;
}
