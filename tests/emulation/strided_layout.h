// Row layouts of the [B, T, H, d] tensors of the softmax-attention harnesses (AttentionShape's strides, attention_shape.cuh;
// include after the kernel file): the contiguous one; head-major [B, H, T, d] memory seen as [B, T, H, d] (Tensor.Transpose(1,
// 2), TorchSharp's layout); and either with gaps between rows (spare token slots per head, spare head slots per token). The
// harnesses keep their tensors and references contiguous and hand the kernels copies in a layout (`store`), read outputs
// back (`load`), and require every gap of an output to come back bitwise untouched (`gaps_kept`). Gaps hold NaN, so a kernel
// that reads one shows it.
#pragma once
#include "cuda_shim.h"
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

enum class Rows { contiguous, head_major, spare_tokens, spare_heads };

inline const char* rows_name(Rows r)
{
    return r == Rows::contiguous ? "contiguous" : r == Rows::head_major ? "head-major" : r == Rows::spare_tokens ? "head-major+gaps" : "token-major+gaps";
}

struct RowLayout {
    int B = 0, T = 0, H = 0, d = 0;
    RowStrides strides{};
    size_t size = 0; // elements of the storage, gaps included

    RowLayout() = default;
    RowLayout(Rows kind, int b, int t, int h, int width) : B(b), T(t), H(h), d(width)
    {
        if (kind == Rows::contiguous || kind == Rows::spare_heads) {
            const int slots = H + (kind == Rows::spare_heads ? 1 : 0); // one spare head slot per token
            strides = RowStrides{(index_t)T * slots * d, slots * d, d};
        } else {
            const int slots = T + (kind == Rows::spare_tokens ? 3 : 0); // three spare token slots per head
            strides = RowStrides{(index_t)H * slots * d, d, slots * d};
        }
        size = (size_t)B * (size_t)strides.batch;
    }

    size_t at(int b, int t, int h) const { return (size_t)(b * strides.batch + (index_t)t * strides.token + (index_t)h * strides.head); }

    template <typename T_>
    static T_ gap_value() { return from_float<T_>(NAN); }

    // The contiguous tensor x in this layout, NaN in the gaps.
    template <typename T_>
    std::vector<T_> store(const std::vector<T_>& x) const
    {
        std::vector<T_> out(size, gap_value<T_>());
        for (int b = 0; b < B; ++b) for (int t = 0; t < T; ++t) for (int h = 0; h < H; ++h)
            std::memcpy(&out[at(b, t, h)], &x[(((size_t)b * T + t) * H + h) * d], sizeof(T_) * d);
        return out;
    }

    // The rows of `storage` as a contiguous tensor.
    template <typename T_>
    std::vector<T_> load(const std::vector<T_>& storage) const
    {
        std::vector<T_> x((size_t)B * T * H * d);
        for (int b = 0; b < B; ++b) for (int t = 0; t < T; ++t) for (int h = 0; h < H; ++h)
            std::memcpy(&x[(((size_t)b * T + t) * H + h) * d], &storage[at(b, t, h)], sizeof(T_) * d);
        return x;
    }

    // 1 (and a FAIL line) when an element outside the rows is no longer the gap value, bit for bit: a stray write.
    template <typename T_>
    int gaps_kept(const char* name, const std::vector<T_>& storage) const
    {
        std::vector<char> row(size, 0);
        for (int b = 0; b < B; ++b) for (int t = 0; t < T; ++t) for (int h = 0; h < H; ++h) std::memset(&row[at(b, t, h)], 1, d);
        const T_ gap = gap_value<T_>();
        size_t changed = 0;
        for (size_t i = 0; i < size; ++i) changed += !row[i] && std::memcmp(&storage[i], &gap, sizeof(T_)) != 0;
        if (changed != 0) printf("  %-6s FAIL: %zu gap elements written\n", name, changed);
        return changed != 0;
    }
};

// The layouts of q, k, v, o, dO, dq, dk, dv for a problem; `strides()` for its AttentionShape.
struct AttentionLayouts {
    Rows mode = Rows::contiguous;
    bool mixed = false;
    RowLayout q, k, v, o, d_o, dq, dk, dv;

    AttentionStrides strides() const { return AttentionStrides{q.strides, k.strides, v.strides, o.strides, d_o.strides, dq.strides, dk.strides, dv.strides}; }
    const char* name() const { return mixed ? "mixed" : rows_name(mode); }
};

// Every tensor `mode`; or (mixed) each tensor its own layout, gaps in some, so a kernel that reads one tensor's rows through
// another's strides shows it.
inline AttentionLayouts attention_layouts(Rows mode, bool mixed, int B, int Tq, int Tk, int H, int G, int dqk, int dv)
{
    AttentionLayouts L;
    L.mode = mode;
    L.mixed = mixed;
    auto pick = [&](Rows r) { return mixed ? r : mode; };
    L.q = RowLayout(pick(Rows::spare_tokens), B, Tq, H, dqk);
    L.k = RowLayout(pick(Rows::head_major), B, Tk, G, dqk);
    L.v = RowLayout(pick(Rows::spare_heads), B, Tk, G, dv);
    L.o = RowLayout(pick(Rows::head_major), B, Tq, H, dv);
    L.d_o = RowLayout(pick(Rows::spare_tokens), B, Tq, H, dv);
    L.dq = RowLayout(pick(Rows::spare_heads), B, Tq, H, dqk);
    L.dk = RowLayout(pick(Rows::spare_tokens), B, Tk, G, dqk);
    L.dv = RowLayout(pick(Rows::contiguous), B, Tk, G, dv);
    return L;
}

// A ragged batch's packed, contiguous tensors ([N, H, d]; page pools [slots, G, d]): batch stride 0, as the C# launcher
// passes them (attention_shape.cuh).
inline AttentionStrides packed_strides(int H, int G, int dqk, int dv)
{
    auto rows = [](int heads, int d) { return RowStrides{0, heads * d, d}; };
    return AttentionStrides{rows(H, dqk), rows(G, dqk), rows(G, dv), rows(H, dv), rows(H, dv), rows(H, dqk), rows(G, dqk), rows(G, dv)};
}
