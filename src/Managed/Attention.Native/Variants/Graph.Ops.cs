using Attention.Native.Ops;

namespace Attention.Native.Variants;

// The graph forms of the shared ops: each computes the forward and records the backward that adds input gradients.
internal sealed partial class Graph
{
    public Node Linear(Node x, Node weight, Node? bias = null)
    {
        var y = Ops.Linear.Forward(x.Value, weight.Value, bias?.Value);
        return Result(y, out_ => Ops.Linear.Backward(x.Value, weight.Value, GradOf(out_), GradIfNeeded(x), GradIfNeeded(weight), GradIfNeeded(bias), accumulate: true), x, weight, bias);
    }

    /// <summary>RoPE at positions <paramref name="positionOffset"/>… (dense), or at each packed token's own position (<see cref="Sequences"/>, which then carries the offsets).</summary>
    public Node Rope(Node x, RopeOptions options, int positionOffset)
    {
        var sequences = Sequences;
        if (sequences is not null && positionOffset != 0)
        {
            throw new InvalidOperationException("Rope: a ragged graph's positions come from its SequenceLayout's start positions, not an offset");
        }
        var y = sequences is null ? Ops.Rope.Forward(x.Value, options, positionOffset) : Ops.Rope.Forward(x.Value, options, sequences);
        return Result(y, out_ =>
        {
            using var dx = Backend.Zeros(x.Shape, x.Value.DType);
            if (sequences is null)
            {
                Ops.Rope.Backward(GradOf(out_), dx, options, positionOffset);
            }
            else
            {
                Ops.Rope.Backward(GradOf(out_), dx, options, sequences);
            }
            Ops.Pointwise.Forward(PointwiseOp.Add, GradOf(x), dx, GradOf(x));
        }, x);
    }

    public Node RmsNorm(Node x, Node? gain, float epsilon = Ops.RmsNorm.DefaultEpsilon)
    {
        var y = Ops.RmsNorm.Forward(x.Value, gain?.Value, epsilon);
        return Result(y, out_ => Ops.RmsNorm.Backward(x.Value, gain?.Value, GradOf(out_), GradOf(x), GradIfNeeded(gain), epsilon, accumulate: true), x, gain);
    }

    /// <summary>Softmax attention; in a ragged graph each sequence attends to its own tokens (unless the options name other layouts).</summary>
    public Node Attention(Node q, Node k, Node v, AttentionOptions options, Node? bias = null)
    {
        if (Sequences is not null && options.Sequences is null)
        {
            options = options with { Sequences = Sequences };
        }
        var o = SoftmaxAttention.Forward(q.Value, k.Value, v.Value, options, bias?.Value, out var lse);
        Own(lse);
        return Result(o, out_ => SoftmaxAttention.Backward(q.Value, k.Value, v.Value, options, bias?.Value, out_.Value, lse, GradOf(out_),
            GradIfNeeded(q), GradIfNeeded(k), GradIfNeeded(v), GradIfNeeded(bias)), q, k, v, bias);
    }

    public Node Pointwise(PointwiseOp op, Node a, Node? b = null, double alpha = 1.0)
    {
        var y = Ops.Pointwise.Forward(op, a.Value, b?.Value, alpha);
        return Result(y, out_ => Ops.Pointwise.Backward(op, a.Value, b?.Value, GradOf(out_), GradIfNeeded(a), GradIfNeeded(b), alpha), a, b);
    }

    public Node Silu(Node a) => Pointwise(PointwiseOp.Silu, a);

    public Node Relu(Node a) => Pointwise(PointwiseOp.Relu, a);

    public Node Add(Node a, Node b) => Pointwise(PointwiseOp.Add, a, b);

    public Node Multiply(Node a, Node b) => Pointwise(PointwiseOp.Multiply, a, b);

    public Node Scale(Node a, double alpha) => Pointwise(PointwiseOp.Scale, a, null, alpha);

    /// <summary>Columns [offset, offset + width) of the last axis.</summary>
    public Node Slice(Node x, int offset, int width)
    {
        var y = Columns.Slice(x.Value, offset, width);
        return Result(y, out_ => Columns.Copy(GradOf(out_), 0, GradOf(x), offset, width, accumulate: true), x);
    }

    /// <summary>
    /// Concatenates along the last axis into <paramref name="shape"/>; each part's rows may repeat (a part with R rows fills
    /// an output of R·f rows, each source row feeding f consecutive output rows).
    /// </summary>
    public Node Concat(Shape shape, params Node[] parts)
    {
        var y = Backend.Create(shape, parts[0].Value.DType, y =>
        {
            int offset = 0;
            foreach (var part in parts)
            {
                Columns.Copy(part.Value, 0, y, offset, part.Shape[-1]);
                offset += part.Shape[-1];
            }
            if (offset != shape[-1])
            {
                throw new ArgumentException($"shape: expected a last axis of {offset} (the parts' widths), actual {shape[-1]}", nameof(shape));
            }
        });
        return Result(y, out_ =>
        {
            int offset = 0;
            foreach (var part in parts)
            {
                if (part.RequiresGrad)
                {
                    Columns.CopyBackward(GradOf(out_), offset, GradOf(part), 0, part.Shape[-1]);
                }
                offset += part.Shape[-1];
            }
        }, parts);
    }

    /// <summary>The same storage under another shape; its gradient is the matching view of the input's.</summary>
    public Node Reshape(Node x, Shape shape)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new(x.Value.Reshape(shape), x.RequiresGrad, x);
    }
}
