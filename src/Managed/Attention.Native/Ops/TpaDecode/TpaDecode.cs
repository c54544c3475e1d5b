namespace Attention.Native.Ops;

/// <summary>
/// TPA decode attention straight from the cached factors (variants.md §3), inference only (no backward).
/// Queries <c>aq [B, Tq, H, Rq]</c>, <c>bq [B, Tq, Rq, d]</c> (already rotated); caches <c>ak [B, Cap, H, Rk]</c>,
/// <c>bk [B, Cap, Rk, d]</c> (rotated), <c>av [B, Cap, H, Rv]</c>, <c>bv [B, Cap, Rv, d]</c>, of which the first
/// <c>length</c> positions are valid. Query i sits at position <c>length − Tq + i</c> and sees keys s ≤ that
/// position (causal).
/// <c>score[h,s] = (1/(Rq·Rk·sqrt(d))) Σ_{r,u} aq[h,r] · ak[s,h,u] · ⟨bq[r,:], bk[s,u,:]⟩</c>,
/// <c>P = softmax_s(score)</c>, <c>o[h,:] = (1/Rv) Σ_s P[h,s] Σ_u av[s,h,u] · bv[s,u,:]</c>; k and v are never
/// materialised.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class TpaDecode
{
    /// <summary>Returns the attention output as a new <c>[B, Tq, H, d]</c> tensor.</summary>
    public static Tensor Forward(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length)
    {
        Validate(aq, bq, ak, bk, av, bv, length);
        return aq.Backend.Create(OutputShape(aq, bq), aq.DType, o => Forward(aq, bq, ak, bk, av, bv, length, o));
    }

    /// <summary>Writes the attention output into <paramref name="o"/> <c>[B, Tq, H, d]</c>, which must not be an input.</summary>
    public static void Forward(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o)
    {
        Validate(aq, bq, ak, bk, av, bv, length);
        Check.Compatible(aq, nameof(aq), o, nameof(o));
        Check.Shape(o, OutputShape(aq, bq), nameof(o));
        Check.Distinct(o, nameof(o), aq, nameof(aq));
        Check.Distinct(o, nameof(o), bq, nameof(bq));
        Check.Distinct(o, nameof(o), ak, nameof(ak));
        Check.Distinct(o, nameof(o), bk, nameof(bk));
        Check.Distinct(o, nameof(o), av, nameof(av));
        Check.Distinct(o, nameof(o), bv, nameof(bv));
        aq.Backend.TpaDecodeForward(aq, bq, ak, bk, av, bv, length, o);
    }

    private static Shape OutputShape(Tensor aq, Tensor bq) => new(aq.Shape[0], aq.Shape[1], aq.Shape[2], bq.Shape[3]);

    private static void Validate(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length)
    {
        Check.Usable(aq, nameof(aq));
        Check.DTypeSupported(aq, nameof(aq));
        if (aq.Shape.Rank != 4 || aq.Shape[3] == 0)
        {
            throw new ArgumentException($"aq: expected shape [B, Tq, H, Rq] with Rq ≥ 1, actual {aq.Shape}", nameof(aq));
        }
        foreach (var (tensor, name) in new[] { (bq, nameof(bq)), (ak, nameof(ak)), (bk, nameof(bk)), (av, nameof(av)), (bv, nameof(bv)) })
        {
            Check.Compatible(aq, nameof(aq), tensor, name);
            if (tensor.Shape.Rank != 4)
            {
                throw new ArgumentException($"{name}: expected rank 4, actual shape {tensor.Shape}", name);
            }
        }
        int batch = aq.Shape[0], queries = aq.Shape[1], heads = aq.Shape[2], queryRank = aq.Shape[3];
        if (bq.Shape[0] != batch || bq.Shape[1] != queries || bq.Shape[2] != queryRank || bq.Shape[3] == 0)
        {
            throw new ArgumentException($"bq: expected shape [{batch}, {queries}, {queryRank}, d] with d ≥ 1 (B, Tq and Rq from aq), actual {bq.Shape}", nameof(bq));
        }
        int width = bq.Shape[3];
        int capacity = ak.Shape[1];
        if (ak.Shape[0] != batch || ak.Shape[2] != heads || ak.Shape[3] == 0)
        {
            throw new ArgumentException($"ak: expected shape [{batch}, Cap, {heads}, Rk] with Rk ≥ 1 (B and H from aq), actual {ak.Shape}", nameof(ak));
        }
        int keyRank = ak.Shape[3];
        Check.Shape(bk, new Shape(batch, capacity, keyRank, width), nameof(bk));
        if (av.Shape[0] != batch || av.Shape[1] != capacity || av.Shape[2] != heads || av.Shape[3] == 0)
        {
            throw new ArgumentException($"av: expected shape [{batch}, {capacity}, {heads}, Rv] with Rv ≥ 1 (B and H from aq, Cap from ak), actual {av.Shape}", nameof(av));
        }
        Check.Shape(bv, new Shape(batch, capacity, av.Shape[3], width), nameof(bv));
        if (length < 1 || length > capacity || length < queries)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length,
                $"length: expected Tq = {queries} ≤ length ≤ Cap = {capacity} and length ≥ 1, actual {length}");
        }
    }
}
