namespace Attention.Native.Variants;

// The graph form of FLatten's linear attention core (Ops.FocusedLinearAttention): its backward adds into the gradients directly.
internal sealed partial class Graph
{
    /// <summary><c>o_t = (q_t kᵀv/Tk) / (q_t · mean_Tk(k) + 1e-6)</c> per batch and head; q [B,Tq,h,d], k [B,Tk,h,d], v [B,Tk,h,dv].</summary>
    public Node FocusedLinearAttention(Node q, Node k, Node v)
    {
        var o = Ops.FocusedLinearAttention.Forward(q.Value, k.Value, v.Value);
        return Result(o, out_ => Ops.FocusedLinearAttention.Backward(q.Value, k.Value, v.Value, GradOf(out_), GradIfNeeded(q), GradIfNeeded(k), GradIfNeeded(v)), q, k, v);
    }
}
