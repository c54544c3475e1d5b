using Attention.Native.Ops;
using TorchSharp;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Attention.Native.Torch;

/// <summary>
/// Attention.Native's kernels as TorchSharp functions. <see cref="ScaledDotProductAttention"/> and
/// <see cref="LightningAttention"/> are autograd functions: their forward and backward run this library's ops on the torch
/// tensors' own memory (inputs, outputs and gradients are torch tensors; nothing is copied for the layouts each documents),
/// and gradients flow to whatever produced the inputs. <see cref="TpaDecode"/> and <see cref="MlaDecode"/> are inference
/// steps (no backward). CPU tensors run on <see cref="Backend.Cpu"/>; CUDA tensors need the <c>backend</c> argument, a
/// <see cref="CudaBackend"/> of the tensors' device.
/// </summary>
/// <remarks>
/// Thread safety: the functions are stateless; on the CPU any number of threads may call them at once on distinct outputs. On a
/// CUDA backend calls must come from one thread at a time, as for the ops. Stream rules: CPU calls have finished when they
/// return. For CUDA tensors the work is queued on the backend's stream, which is not torch's: create the backend on torch's
/// stream (<c>CudaBackend.Create(ordinal, stream)</c>) or synchronise the two around each call. The CUDA
/// path has not run in this library's tests (TorchSharp's CUDA packages are not available to them); the device-pointer
/// path it uses (<see cref="CudaBackend.Wrap(Interop.CUdeviceptr, Shape, DType)"/>) is tested on its own.
/// </remarks>
public static class AttentionFunctions
{
    /// <summary>
    /// <c>softmax(scale · q kᵀ + causal mask) v</c> in torch's layout: <paramref name="query"/> <c>[B, H, T_q, d]</c>,
    /// <paramref name="key"/> <c>[B, G, T_k, d]</c>, <paramref name="value"/> <c>[B, G, T_k, d_v]</c>, with H a multiple of G
    /// (grouped-query attention without repeating k and v: query head h reads KV head h / (H/G), as torch's
    /// <c>enable_gqa</c>). Returns <c>[B, H, T_q, d_v]</c>. The inputs are read in place when their memory is either contiguous
    /// <c>[B, H, T, d]</c> or a <c>[B, T, H, d]</c> tensor transposed (as projections make them); other layouts are copied
    /// once. Float32, float64, bfloat16 and float16.
    /// </summary>
    /// <param name="query">Queries <c>[B, H, T_q, d]</c>.</param>
    /// <param name="key">Keys <c>[B, G, T_k, d]</c>.</param>
    /// <param name="value">Values <c>[B, G, T_k, d_v]</c>.</param>
    /// <param name="isCausal">
    /// Query i sees keys j ≤ T_k − T_q + i (aligned at the bottom right, as flash-attention and a KV cache align them); the
    /// same as torch's <c>is_causal</c> when T_q = T_k.
    /// </param>
    /// <param name="scale">The score scale; null: 1/√d.</param>
    /// <param name="backend">For CUDA tensors, the <see cref="CudaBackend"/> of their device; null for CPU tensors.</param>
    public static TorchTensor ScaledDotProductAttention(TorchTensor query, TorchTensor key, TorchTensor value, bool isCausal = false, double? scale = null, Backend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(value);
        RequireRank(query, 4, nameof(query), "[B, H, T_q, d]");
        RequireRank(key, 4, nameof(key), "[B, G, T_k, d]");
        RequireRank(value, 4, nameof(value), "[B, G, T_k, d_v]");
        RequireSameKind(query, nameof(query), key, nameof(key));
        RequireSameKind(query, nameof(query), value, nameof(value));
        long b = query.shape[0], h = query.shape[1], d = query.shape[3], g = key.shape[1], tk = key.shape[2];
        if (key.shape[0] != b || key.shape[3] != d || g < 1 || h % g != 0)
        {
            throw new ArgumentException($"key: expected [{b}, G, T_k, {d}] with G dividing {h}, actual [{string.Join(", ", key.shape)}]", nameof(key));
        }
        if (value.shape[0] != b || value.shape[1] != g || value.shape[2] != tk)
        {
            throw new ArgumentException($"value: expected [{b}, {g}, {tk}, d_v], actual [{string.Join(", ", value.shape)}]", nameof(value));
        }
        if (isCausal && query.shape[2] > tk)
        {
            throw new ArgumentException($"query: expected at most T_k = {tk} queries with isCausal (they align at the bottom right), actual {query.shape[2]}", nameof(query));
        }
        double s = scale ?? 1 / Math.Sqrt(d);
        return ScaledDotProductAttentionFunction.apply(query, key, value, new ScaledDotProductAttentionFunction.Settings(s, isCausal, backend))[0];
    }

    /// <summary>
    /// Lightning Attention-2 (TransNormerLLM's linear attention with per-head decay):
    /// <c>o_t = Σ_{s≤t} λ_h^(t−s) (q_t · k_s) v_s</c>, plus <c>λ_h^(t+1) q_t · S0</c> from an initial state. Token-major
    /// tensors as the projections give them (and as fla's kernels take them): <paramref name="q"/>, <paramref name="k"/>
    /// <c>[B, T, H, d_k]</c>, <paramref name="v"/> <c>[B, T, H, d_v]</c>; read in place when contiguous, copied once
    /// otherwise. Returns o <c>[B, T, H, d_v]</c> and, with <paramref name="outputFinalState"/>, the state after the last
    /// token <c>[B, H, d_k, d_v]</c> (float32 for 16-bit inputs), whose gradient, when it is used, flows back as well.
    /// </summary>
    /// <param name="q">Queries <c>[B, T, H, d_k]</c>.</param>
    /// <param name="k">Keys <c>[B, T, H, d_k]</c>.</param>
    /// <param name="v">Values <c>[B, T, H, d_v]</c>.</param>
    /// <param name="decay">λ_h per head, each in (0, 1] (TransNormerLLM: <c>exp(−slope_h)</c>).</param>
    /// <param name="initialState">Optional state S0 <c>[B, H, d_k, d_v]</c> (contiguous; float32 for 16-bit inputs).</param>
    /// <param name="outputFinalState">Also return the final state.</param>
    /// <param name="blockSize">Block length of the chunked algorithm; the result does not depend on it.</param>
    /// <param name="backend">For CUDA tensors, the <see cref="CudaBackend"/> of their device; null for CPU tensors.</param>
    public static (TorchTensor Output, TorchTensor? FinalState) LightningAttention(TorchTensor q, TorchTensor k, TorchTensor v, ReadOnlySpan<double> decay,
        TorchTensor? initialState = null, bool outputFinalState = false, int blockSize = 64, Backend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        RequireRank(q, 4, nameof(q), "[B, T, H, d_k]");
        RequireSameKind(q, nameof(q), k, nameof(k));
        RequireSameKind(q, nameof(q), v, nameof(v));
        if (initialState is not null && (initialState.device_type != q.device_type || initialState.device_index != q.device_index))
        {
            throw new ArgumentException($"initialState: expected a tensor on {q.device}, actual {initialState.device}", nameof(initialState));
        }
        var settings = new LightningAttentionFunction.Settings(decay.ToArray(), outputFinalState, blockSize, backend);
        var outputs = LightningAttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(), initialState?.contiguous()!, settings);
        return (outputs[0], outputFinalState ? outputs[1] : null);
    }

    /// <summary>
    /// TPA decode (variants.md §3, inference only) from the cached factors, without building k or v:
    /// <c>aq [B, T_q, H, R_q]</c>, <c>bq [B, T_q, R_q, d]</c> (rotated); caches <c>ak [B, Cap, H, R_k]</c>,
    /// <c>bk [B, Cap, R_k, d]</c> (rotated), <c>av [B, Cap, H, R_v]</c>, <c>bv [B, Cap, R_v, d]</c>, of which the first
    /// <paramref name="length"/> positions are valid; query i sits at position <c>length − T_q + i</c>. Returns
    /// <c>[B, T_q, H, d]</c> (it does not require grad). Contiguous inputs are read in place; others are copied once.
    /// </summary>
    /// <param name="aq">Query head factors <c>[B, T_q, H, R_q]</c>.</param>
    /// <param name="bq">Query token factors <c>[B, T_q, R_q, d]</c>.</param>
    /// <param name="ak">Cached key head factors <c>[B, Cap, H, R_k]</c>.</param>
    /// <param name="bk">Cached key token factors <c>[B, Cap, R_k, d]</c>.</param>
    /// <param name="av">Cached value head factors <c>[B, Cap, H, R_v]</c>.</param>
    /// <param name="bv">Cached value token factors <c>[B, Cap, R_v, d]</c>.</param>
    /// <param name="length">Valid cache positions.</param>
    /// <param name="backend">For CUDA tensors, the <see cref="CudaBackend"/> of their device; null for CPU tensors.</param>
    public static TorchTensor TpaDecode(TorchTensor aq, TorchTensor bq, TorchTensor ak, TorchTensor bk, TorchTensor av, TorchTensor bv, int length, Backend? backend = null)
    {
        TorchTensor[] inputs = [aq, bq, ak, bk, av, bv];
        string[] names = [nameof(aq), nameof(bq), nameof(ak), nameof(bk), nameof(av), nameof(bv)];
        for (int i = 0; i < inputs.Length; i++)
        {
            ArgumentNullException.ThrowIfNull(inputs[i], names[i]);
            RequireRank(inputs[i], 4, names[i], "rank 4");
            RequireSameKind(aq, nameof(aq), inputs[i], names[i]);
        }
        var device = TorchMemory.BackendFor(aq, backend, nameof(aq));
        using var noGrad = torch.no_grad();
        var output = torch.empty([aq.shape[0], aq.shape[1], aq.shape[2], bq.shape[3]], aq.dtype, aq.device);
        var contiguous = inputs.Select(t => t.contiguous()).ToArray();
        var views = new List<Native.Tensor>();
        try
        {
            for (int i = 0; i < contiguous.Length; i++)
            {
                views.Add(TorchMemory.View(contiguous[i], device, names[i]));
            }
            using var o = TorchMemory.View(output, device, "output");
            Ops.TpaDecode.Forward(views[0], views[1], views[2], views[3], views[4], views[5], length, o);
        }
        finally
        {
            views.ForEach(v => v.Dispose());
        }
        GC.KeepAlive(contiguous);
        return output;
    }

    /// <summary>
    /// MLA decode in the absorbed form (variants.md §2, inference only): attention of <paramref name="query"/>
    /// <c>[B, T_q, H, d_n + d_r]</c> (q_pe rotated) over the first <paramref name="length"/> positions of the latent cache
    /// <paramref name="cache"/> <c>[B, Cap, d_c + d_r]</c> (<c>[c | k_pe]</c>), with <paramref name="kvUp"/> =
    /// <c>w_kv_b [H·(d_n + d_v), d_c]</c> folded into the query and the output; k and v are never built. Returns
    /// <c>[B, T_q, H, d_v]</c> (it does not require grad). Contiguous inputs are read in place; the result is computed into
    /// this library's memory and copied once into the returned tensor.
    /// </summary>
    /// <param name="query">Queries <c>[B, T_q, H, d_n + d_r]</c>.</param>
    /// <param name="cache">The latent cache <c>[B, Cap, d_c + d_r]</c>.</param>
    /// <param name="kvUp"><c>w_kv_b [H·(d_n + d_v), d_c]</c>.</param>
    /// <param name="nopeDim">d_n, the width of the query's part without rotary embedding.</param>
    /// <param name="length">Valid cache positions.</param>
    /// <param name="scale">The score scale (DeepSeek: 1/√(d_n + d_r), times YaRN's factor where used).</param>
    /// <param name="backend">For CUDA tensors, the <see cref="CudaBackend"/> of their device; null for CPU tensors.</param>
    public static TorchTensor MlaDecode(TorchTensor query, TorchTensor cache, TorchTensor kvUp, int nopeDim, int length, double scale, Backend? backend = null)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(kvUp);
        RequireSameKind(query, nameof(query), cache, nameof(cache));
        RequireSameKind(query, nameof(query), kvUp, nameof(kvUp));
        var device = TorchMemory.BackendFor(query, backend, nameof(query));
        using var noGrad = torch.no_grad();
        var (q, c, w) = (query.contiguous(), cache.contiguous(), kvUp.contiguous());
        using var vq = TorchMemory.View(q, device, nameof(query));
        using var vc = TorchMemory.View(c, device, nameof(cache));
        using var vw = TorchMemory.View(w, device, nameof(kvUp));
        using var o = LatentAttention.Decode(vq, vc, vw, nopeDim, length, scale);
        var output = torch.empty([o.Shape[0], o.Shape[1], o.Shape[2], o.Shape[3]], query.dtype, query.device);
        TorchMemory.CopyInto(o, output, "output");
        return output;
    }

    private static void RequireRank(TorchTensor t, int rank, string name, string layout)
    {
        if (t.dim() != rank)
        {
            throw new ArgumentException($"{name}: expected {layout}, actual shape [{string.Join(", ", t.shape)}]", name);
        }
    }

    private static void RequireSameKind(TorchTensor first, string firstName, TorchTensor t, string name)
    {
        if (t.dtype != first.dtype || t.device_type != first.device_type || t.device_index != first.device_index)
        {
            throw new ArgumentException($"{name}: expected {first.dtype} on {first.device} like {firstName}, actual {t.dtype} on {t.device}", name);
        }
    }
}
