// cuda/columns.cu (a column block copied, overwriting and accumulating, with rows repeated; its backward, the repeats summed)
// in fp32, bf16 and fp16 under the emulation of cuda_shim.h, against the index arithmetic in double: one element, blocks at
// offsets inside wider rows on both sides, a row broadcast, and a clamped grid (grid-stride). The destination columns
// outside the block must keep their values.
#include "cuda_shim.h"
#include "bf16_check.h"
#include "columns.emu.cpp"
#include "launch_plans.h"

struct P { long long rows; int src_width, src_offset, dst_width, dst_offset, width, repeat, sms; };

template <typename T>
int run(P p)
{
    std::mt19937 rng((unsigned)(p.rows * 3 + p.src_width * 7 + p.dst_width + p.repeat));
    const long long rows = p.rows, out_rows = rows * p.repeat;
    auto src = random_values<T>(rng, (size_t)rows * p.src_width), dst0 = random_values<T>(rng, (size_t)out_rows * p.dst_width);
    auto ddst = random_values<T>(rng, dst0.size());
    // Reference: block element (r·repeat + i, dst_offset + c) ← (r, src_offset + c); dsrc's contribution the repeats' sum.
    std::vector<double> copy_c(dst0.size(), 0.0), dsrc_c(src.size(), 0.0);
    std::vector<char> in_block(dst0.size(), 0);
    for (long long r = 0; r < rows; ++r) for (int i = 0; i < p.repeat; ++i) for (int c = 0; c < p.width; ++c) {
        const size_t to = (size_t)(r * p.repeat + i) * p.dst_width + p.dst_offset + c, from = (size_t)r * p.src_width + p.src_offset + c;
        copy_c[to] = to_float(src[from]);
        in_block[to] = 1;
        dsrc_c[from] += to_float(ddst[to]);
    }
    // ColumnsCuda: Elementwise.Grid over the elements copied (copy) or summed into (gather).
    const dim3 copy_grid = elementwise_grid(p.sms, out_rows * p.width), gather_grid = elementwise_grid(p.sms, rows * p.width);
    printf("%s rows%lld src %d@%d dst %d@%d width%d repeat%d sms%d: %u and %u blocks\n", type_name<T>(), rows, p.src_width, p.src_offset,
           p.dst_width, p.dst_offset, p.width, p.repeat, p.sms, copy_grid.x, gather_grid.x);
    int fails = 0;

    // Copy, overwriting: the block is src's, the rest of dst as it was.
    auto dst = dst0;
    std::vector<double> dst_ref = doubles(dst0);
    for (size_t e = 0; e < dst.size(); ++e) if (in_block[e]) dst_ref[e] = copy_c[e];
    emu_launch(copy_grid, dim3{elementwise_threads}, [&] {
        columns_copy<T>(dst.data(), src.data(), rows, p.src_width, p.src_offset, p.dst_width, p.dst_offset, p.width, p.repeat, 0); });
    fails += check_output("copy", floats(dst), dst_ref, tolerance_of<T>());

    // Copy, accumulating: the block's contribution is src's, the rest's zero.
    const auto acc0 = starting_values<T>(rng, copy_c);
    auto acc = acc0;
    emu_launch(copy_grid, dim3{elementwise_threads}, [&] {
        columns_copy<T>(acc.data(), src.data(), rows, p.src_width, p.src_offset, p.dst_width, p.dst_offset, p.width, p.repeat, 1); });
    fails += check_added<T>("copy+", acc, acc0, copy_c);

    // Gather: dsrc += Σ_i ddst over the repeats, in the block only.
    const auto dsrc0 = starting_values<T>(rng, dsrc_c);
    auto dsrc = dsrc0;
    emu_launch(gather_grid, dim3{elementwise_threads}, [&] {
        columns_gather<T>(dsrc.data(), ddst.data(), rows, p.src_width, p.src_offset, p.dst_width, p.dst_offset, p.width, p.repeat); });
    fails += check_added<T>("dsrc", dsrc, dsrc0, dsrc_c);
    return fails;
}

int main()
{
    int fails = 0;
    auto run_all = [](P p) { return emu_cases([&] { return run<float>(p); }, [&] { return run<bf16_t>(p); }, [&] { return run<half_t>(p); }); };
    fails += run_all({1, 1, 0, 1, 0, 1, 1, h200_sms});     // one element
    fails += run_all({7, 10, 3, 13, 5, 6, 1, h200_sms});   // a slice into the middle of a wider row
    fails += run_all({9, 5, 0, 12, 7, 5, 4, h200_sms});    // each row broadcast to 4 rows, appended at the end
    fails += run_all({300, 40, 1, 50, 10, 33, 1, 1});      // 9,900 elements on 32 blocks (grid-stride)
    fails += run_all({50, 64, 0, 70, 3, 64, 3, 1});        // 9,600 copied (grid-stride), 3 repeats summed per source element
    printf("%d failing\n", fails);
    return fails != 0;
}
