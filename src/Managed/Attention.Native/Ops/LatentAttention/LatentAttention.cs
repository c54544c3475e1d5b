namespace Attention.Native.Ops;

/// <summary>
/// MLA decode in the absorbed form (variants.md §2): attention as MQA over the cached latent. For query head h,
/// <c>W_kb_h</c> (rows <c>h·(d_n+d_v) … +d_n</c> of <c>w_kv_b</c>) is folded into the query, <c>q̂_h = [q_nope_h · W_kb_h | q_pe_h]</c>,
/// scored against each cached <c>[c_s | k_pe_s]</c>, the probabilities average the latents <c>c_s</c>, and <c>W_vb_h</c> (rows
/// <c>h·(d_n+d_v)+d_n … +d_v</c>) lifts the result to <c>o_h</c>. The keys and values of the plain form are never built, and the
/// result equals it: <c>q_h·k_h,s = q̂_h·[c_s | k_pe_s]</c> and <c>Σ_s P v_h,s = W_vb_h Σ_s P c_s</c>. Inference only (no backward).
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class LatentAttention
{
    /// <summary>
    /// Attention of <paramref name="q"/> <c>[B, T_q, H, d_n+d_r]</c> (q_pe already rotated) over the first <paramref name="length"/>
    /// positions of <paramref name="cache"/> <c>[B, Cap, d_c+d_r]</c>; query i sits at position <c>length − T_q + i</c> and sees
    /// positions up to its own. <paramref name="kvUp"/> is <c>w_kv_b [H·(d_n+d_v), d_c]</c>. Returns o <c>[B, T_q, H, d_v]</c>.
    /// </summary>
    public static Tensor Decode(Tensor q, Tensor cache, Tensor kvUp, int nopeDim, int length, double scale)
    {
        Check.Usable(q, nameof(q));
        Check.DTypeSupported(q, nameof(q));
        Check.Rank(q, 4, nameof(q), "[B, T_q, H, d_n+d_r]");
        Check.Compatible(q, nameof(q), cache, nameof(cache));
        Check.Rank(cache, 3, nameof(cache), "[B, Cap, d_c+d_r]");
        Check.Compatible(q, nameof(q), kvUp, nameof(kvUp));
        Check.Rank(kvUp, 2, nameof(kvUp), "[H·(d_n+d_v), d_c]");
        int b = q.Shape[0], tq = q.Shape[1], h = q.Shape[2];
        int ropeDim = q.Shape[3] - nopeDim, latent = kvUp.Shape[1];
        if (nopeDim < 0 || ropeDim < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(nopeDim), $"nopeDim: expected a width in [0, {q.Shape[3]}], actual {nopeDim}");
        }
        if (kvUp.Shape[0] % h != 0 || kvUp.Shape[0] / h <= nopeDim)
        {
            throw new ArgumentException($"kvUp: expected H·(d_n+d_v) rows with H = {h}, d_n = {nopeDim}, d_v ≥ 1, actual {kvUp.Shape}", nameof(kvUp));
        }
        if (cache.Shape[0] != b || cache.Shape[2] != latent + ropeDim)
        {
            throw new ArgumentException($"cache: expected [{b}, Cap, {latent + ropeDim}] (d_c + d_r), actual {cache.Shape}", nameof(cache));
        }
        if (length < tq || length > cache.Shape[1])
        {
            throw new ArgumentOutOfRangeException(nameof(length), $"length: expected a valid length in [{tq}, {cache.Shape[1]}] (at least one position per query), actual {length}");
        }
        if (!(scale > 0) || !double.IsFinite(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"scale: expected a finite value > 0, actual {scale}");
        }
        int dv = (kvUp.Shape[0] / h) - nopeDim;
        var shape = new Shape(b, tq, h, dv);
        return q.Backend.Create(shape, q.DType, o => q.Backend.LatentAttentionDecode(q, cache, kvUp, o, nopeDim, length, scale));
    }
}
