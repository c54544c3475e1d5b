using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of Lightning: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void LightningForward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor o, Tensor? initialState, Tensor? finalState, int blockSize, RaggedStates? ragged) => throw Unsupported(nameof(Lightning));

    internal virtual void LightningBackward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState, int blockSize, RaggedStates? ragged) => throw Unsupported(nameof(Lightning));
}

public sealed partial class CpuBackend
{
    internal override void LightningForward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor o, Tensor? initialState, Tensor? finalState, int blockSize, RaggedStates? ragged)
    {
        if (q.DType.IsHalfPrecision())
        {
            // The states are F32 already (Lightning.StateDType): they pass as they are; LightningCpu copies the initial state
            // before writing the final one, so an in-place update reads it intact.
            using var w = new Widening(this);
            LightningForward(w.In(q), w.In(k), w.In(v), decay, w.Out(o, keepContents: false), initialState, finalState, blockSize, ragged);
            return;
        }
        if (ragged is not null)
        {
            foreach (var p in RaggedParts(q, v, ragged))
            {
                LightningForward(p.Rows(q), p.Rows(k), p.Rows(v), decay, p.Rows(o), p.State(initialState), p.State(finalState), blockSize, null);
            }
            return;
        }
        var dims = LightningDimensions(q, v);
        if (q.DType == DType.F64)
        {
            LightningCpu.Forward(P<double>(q), P<double>(k), P<double>(v), decay, P<double>(o), P<double>(initialState), P<double>(finalState), dims, blockSize);
        }
        else
        {
            LightningCpu.Forward(P<float>(q), P<float>(k), P<float>(v), decay, P<float>(o), P<float>(initialState), P<float>(finalState), dims, blockSize);
        }
    }

    internal override void LightningBackward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState, int blockSize, RaggedStates? ragged)
    {
        if (q.DType.IsHalfPrecision())
        {
            // The states and dS0 are F32 already (Lightning.StateDType).
            using var w = new Widening(this);
            LightningBackward(w.In(q), w.In(k), w.In(v), decay, w.In(dO), w.OutOptional(dq, keepContents: true), w.OutOptional(dk, keepContents: true), w.OutOptional(dv, keepContents: true), initialState, dInitialState, dFinalState, blockSize, ragged);
            return;
        }
        if (ragged is not null)
        {
            foreach (var p in RaggedParts(q, v, ragged))
            {
                LightningBackward(p.Rows(q), p.Rows(k), p.Rows(v), decay, p.Rows(dO), p.Rows(dq), p.Rows(dk), p.Rows(dv), p.State(initialState), p.State(dInitialState), p.State(dFinalState), blockSize, null);
            }
            return;
        }
        var dims = LightningDimensions(q, v);
        if (q.DType == DType.F64)
        {
            LightningCpu.Backward(P<double>(q), P<double>(k), P<double>(v), decay, P<double>(dO), P<double>(dq), P<double>(dk), P<double>(dv), P<double>(initialState), P<double>(dInitialState), P<double>(dFinalState), dims, blockSize);
        }
        else
        {
            LightningCpu.Backward(P<float>(q), P<float>(k), P<float>(v), decay, P<float>(dO), P<float>(dq), P<float>(dk), P<float>(dv), P<float>(initialState), P<float>(dInitialState), P<float>(dFinalState), dims, blockSize);
        }
    }

    // Each sequence of a ragged call as a dense call of batch 1 on views: its token rows and its state row.
    private static IEnumerable<RaggedPart> RaggedParts(Tensor q, Tensor v, RaggedStates ragged) =>
        Enumerable.Range(0, ragged.Sequences.Count).Select(s => new RaggedPart(ragged.Sequences.Start(s), ragged.Sequences.Length(s), ragged.Slots[s]));

    private readonly record struct RaggedPart(int Start, int Length, int Slot)
    {
        [return: System.Diagnostics.CodeAnalysis.NotNullIfNotNull(nameof(t))]
        public Tensor? Rows(Tensor? t) => t is null ? null : TokenRows(t, Start, Length);

        public Tensor? State(Tensor? t) => t is null ? null : LeadingRow(t, Slot);
    }

    private static LightningCpu.Dimensions LightningDimensions(Tensor q, Tensor v) =>
        new(q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3], v.Shape[3]);
}
