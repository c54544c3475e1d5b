namespace Attention.Native.Variants;

/// <summary>
/// What the 2-D forms of agent and flatten share (docs/vision-forms.md): the token grid of an input, Swin's windows, DeiT's
/// class token, PVT's spatially reduced keys' input, and the 2-D pooling, each written with the graph's ops.
/// </summary>
internal static class VisionGraph
{
    /// <summary>The LayerNorm after the spatial reduction: PyTorch's default eps (the attention's own <c>nn.LayerNorm(dim)</c>).</summary>
    public const float NormEpsilon = 1e-5f;

    /// <summary>
    /// Checks <paramref name="x"/> for <paramref name="form"/>. pvt: <c>[B, grid_h·grid_w, C]</c> (the built grid) or
    /// <c>[B, H, W, C]</c> (any grid whose sides <paramref name="srRatio"/> divides). swin: <c>[B·windows, grid_h·grid_w, C]</c>
    /// (windows, as the official module takes them) or <c>[B, H, W, C]</c> that grid_h×grid_w windows tile. deit:
    /// <c>[B, 1 + S², C]</c>, a class token and an S×S grid.
    /// </summary>
    public static void CheckInput(AttentionLayer layer, Tensor x, string name, string form, int gridHeight, int gridWidth, int srRatio)
    {
        int dm = layer.Config.DModel;
        if (x.Shape.Rank == 4 && form != VisionForms.Deit)
        {
            layer.CheckTokens(x.Reshape(new Shape(x.Shape[0], x.Shape[1] * x.Shape[2], x.Shape[3])), name, batch: null);
            if (form == VisionForms.Swin && (x.Shape[1] % gridHeight != 0 || x.Shape[2] % gridWidth != 0))
            {
                throw new ArgumentException($"{name}: expected a grid [B, H, W, {dm}] that {gridHeight}×{gridWidth} windows tile (H a multiple of grid_h, W of grid_w), actual {x.Shape}", name);
            }
            if (x.Shape[1] % srRatio != 0 || x.Shape[2] % srRatio != 0)
            {
                throw new ArgumentException($"{name}: expected a grid [B, H, W, {dm}] whose H and W sr_ratio = {srRatio} divides, actual {x.Shape}", name);
            }
            return;
        }
        layer.CheckTokens(x, name, batch: null);
        if (form == VisionForms.Deit)
        {
            int side = ClassGridSide(x.Shape[1]);
            if (side < 1 || 1 + (side * side) != x.Shape[1])
            {
                throw new ArgumentException($"{name}: expected [B, 1 + S², {dm}] (a class token, then an S×S grid; built for S = {gridHeight}), actual {x.Shape}", name);
            }
            return;
        }
        if (x.Shape[1] != gridHeight * gridWidth)
        {
            string other = form == VisionForms.Swin ? $"[B, H, W, {dm}] for a grid of windows" : $"[B, H, W, {dm}] for another grid";
            throw new ArgumentException($"{name}: expected [B, grid_h·grid_w = {gridHeight * gridWidth}, {dm}] (the built {gridHeight}×{gridWidth} grid; pass {other}), actual {x.Shape}", name);
        }
    }

    /// <summary>The side S of DeiT's S×S grid behind one class token: ⌊√(T − 1)⌋ as the official <c>int(n ** 0.5)</c> of T = 1 + S².</summary>
    public static int ClassGridSide(int tokens) => (int)Math.Sqrt(tokens - 1 + 0.5);

    /// <summary>
    /// The tokens an input that passed <see cref="CheckInput"/> is attended over: <c>[B', H·W, C]</c> and its grid H×W, with
    /// Swin's windows cut out of a <c>[B, H, W, C]</c> grid (B' = B·windows) and DeiT's class token kept in front.
    /// </summary>
    public static (Node Tokens, int Height, int Width) Tokens(Graph graph, Node x, string form, int gridHeight, int gridWidth)
    {
        int b = x.Shape[0], dm = x.Shape[^1];
        if (form == VisionForms.Deit)
        {
            int side = ClassGridSide(x.Shape[1]);
            return (x, side, side);
        }
        if (x.Shape.Rank == 3)
        {
            return (x, gridHeight, gridWidth);
        }
        int height = x.Shape[1], width = x.Shape[2];
        if (form == VisionForms.Swin && (height, width) != (gridHeight, gridWidth))
        {
            // [B, H/wh, wh, W/ww, ww, C] → [B, H/wh, W/ww, wh, ww, C]: window after window, each row-major.
            var blocks = graph.Reshape(x, new Shape(b, height / gridHeight, gridHeight, width / gridWidth, gridWidth, dm));
            var windows = graph.Permute(blocks, WindowOrder);
            return (graph.Reshape(windows, new Shape(b * (height / gridHeight) * (width / gridWidth), gridHeight * gridWidth, dm)), gridHeight, gridWidth);
        }
        return (graph.Reshape(x, new Shape(b, height * width, dm)), height, width);
    }

    /// <summary>The layer's output <c>[B', N, C]</c> back in the input's shape (Swin's windows put back in place).</summary>
    public static Node Untokens(Graph graph, Node y, Node x, string form, int gridHeight, int gridWidth)
    {
        if (form == VisionForms.Swin && x.Shape.Rank == 4 && (x.Shape[1], x.Shape[2]) != (gridHeight, gridWidth))
        {
            int b = x.Shape[0], height = x.Shape[1], width = x.Shape[2], dm = x.Shape[3];
            var windows = graph.Reshape(y, new Shape(b, height / gridHeight, width / gridWidth, gridHeight, gridWidth, dm));
            return graph.Reshape(graph.Permute(windows, WindowOrder), x.Shape);
        }
        return graph.Reshape(y, x.Shape);
    }

    /// <summary>Tokens [start, start + count) of <c>[B, N, C]</c>: one contiguous run of columns of its <c>[B, N·C]</c> view.</summary>
    public static Node TokenRange(Graph graph, Node tokens, int start, int count)
    {
        int b = tokens.Shape[0], n = tokens.Shape[1], c = tokens.Shape[2];
        var rows = graph.Slice(graph.Reshape(tokens, new Shape(b, n * c)), start * c, count * c);
        return graph.Reshape(rows, new Shape(b, count, c));
    }

    // Swaps the two middle axes of [B, Hb, h, Wb, w, C]: cuts windows out, and (applied again) puts them back.
    private static readonly int[] WindowOrder = [0, 1, 3, 2, 4, 5];

    /// <summary>
    /// The keys' and values' input: the tokens themselves (r = 1), or on the (H/r)×(W/r) grid
    /// <c>LayerNorm(Conv2d_{r×r, stride r}(x))</c>. The convolution's patches do not overlap, so it is a gather of each patch
    /// into one row <c>[C·r·r]</c> (channel-major, then the patch row and column, as <c>sr.weight [C, C, r, r]</c> is laid out)
    /// and a Linear. LayerNorm is RMSNorm (with the gain and eps 1e-5) of the channels minus their mean, plus the bias; the
    /// mean is removed by a Linear with the centering matrix I − 1/C (<paramref name="centering"/>), exact in F32/F64.
    /// </summary>
    public static Node KeysInput(AttentionLayer layer, Graph graph, Node tokens, int height, int width, int srRatio, Tensor? centering)
    {
        if (srRatio == 1)
        {
            return tokens;
        }
        int b = tokens.Shape[0], c = tokens.Shape[2], r = srRatio, kh = height / r, kw = width / r;
        var patches = graph.Permute(graph.Reshape(tokens, new Shape(b, kh, r, kw, r, c)), [0, 1, 3, 5, 2, 4]);
        var rows = graph.Reshape(patches, new Shape(b, kh * kw, c * r * r));
        var weight = graph.Reshape(layer.Param(graph, "sr.weight"), new Shape(c, c * r * r));
        var reduced = graph.Linear(rows, weight, layer.Param(graph, "sr.bias"));
        var centered = graph.Linear(reduced, graph.Input(centering!, requiresGrad: false));
        var normed = graph.RmsNorm(centered, layer.Param(graph, "norm.weight"), NormEpsilon);
        return graph.Add(normed, layer.Param(graph, "norm.bias"));
    }

    /// <summary>The centering matrix I − 1/C of <see cref="KeysInput"/> for a layer of width <paramref name="channels"/>.</summary>
    public static Tensor Centering(Backend backend, int channels, DType dtype)
    {
        var values = new double[(long)channels * channels];
        for (int i = 0; i < channels; i++)
        {
            for (int j = 0; j < channels; j++)
            {
                values[((long)i * channels) + j] = (i == j ? 1.0 : 0.0) - (1.0 / channels);
            }
        }
        return backend.FromArray(values, new Shape(channels, channels), dtype);
    }

    /// <summary>
    /// <c>AdaptiveAvgPool2d</c> of tokens <c>[B, H·W, C]</c> to a <paramref name="poolHeight"/>×<paramref name="poolWidth"/>
    /// grid <c>[B, ph·pw, C]</c> (row-major). Its windows are products of the two axes' windows and the average of a product
    /// window is the average over rows of the averages over columns, so it is the 1-D pool over columns (rows as the batch)
    /// and then over rows (the pooled columns and channels as one channel axis).
    /// </summary>
    public static Node Pool(Graph graph, Node tokens, int height, int width, int poolHeight, int poolWidth)
    {
        int b = tokens.Shape[0], c = tokens.Shape[2];
        var columns = graph.AdaptivePool(graph.Reshape(tokens, new Shape(b * height, width, c)), poolWidth);
        var rows = graph.AdaptivePool(graph.Reshape(columns, new Shape(b, height, poolWidth * c)), poolHeight);
        return graph.Reshape(rows, new Shape(b, poolHeight * poolWidth, c));
    }

    /// <summary>
    /// The projections under the official names: pvt's <c>q</c> and <c>kv</c> (rows k then v) and, with a reduction, <c>sr</c> and
    /// <c>norm</c>; swin's and deit's one <c>qkv</c> (rows q, k, v); then <c>proj</c>. Biases of q, k, v iff <paramref name="qkvBias"/>.
    /// </summary>
    public static IEnumerable<ParameterSpec> Projections(string form, int dm, int r, bool qkvBias)
    {
        if (form == VisionForms.Pvt)
        {
            yield return new("q.weight", new Shape(dm, dm));
            if (qkvBias)
            {
                yield return new("q.bias", new Shape(dm));
            }
            yield return new("kv.weight", new Shape(2 * dm, dm));
            if (qkvBias)
            {
                yield return new("kv.bias", new Shape(2 * dm));
            }
        }
        else
        {
            yield return new("qkv.weight", new Shape(3 * dm, dm));
            if (qkvBias)
            {
                yield return new("qkv.bias", new Shape(3 * dm));
            }
        }
        yield return new("proj.weight", new Shape(dm, dm));
        yield return new("proj.bias", new Shape(dm));
        if (r > 1)
        {
            yield return new("sr.weight", new Shape(dm, dm, r, r));
            yield return new("sr.bias", new Shape(dm));
            yield return new("norm.weight", new Shape(dm), ParameterInit.Ones);
            yield return new("norm.bias", new Shape(dm), ParameterInit.Zeros);
        }
    }

    /// <summary>q <c>[B, N, C]</c> and k, v <c>[B, N', C]</c> of the tokens (N' = N, or the reduced grid's for pvt with r &gt; 1).</summary>
    public static (Node Q, Node K, Node V) QueryKeyValue(AttentionLayer layer, Graph graph, Node tokens, string form, bool qkvBias, int height, int width,
        int srRatio, Tensor? centering)
    {
        int dm = tokens.Shape[2];
        if (form == VisionForms.Pvt)
        {
            var q = graph.Linear(tokens, layer.Param(graph, "q.weight"), qkvBias ? layer.Param(graph, "q.bias") : null);
            var kv = graph.Linear(KeysInput(layer, graph, tokens, height, width, srRatio, centering), layer.Param(graph, "kv.weight"), qkvBias ? layer.Param(graph, "kv.bias") : null);
            return (q, graph.Slice(kv, 0, dm), graph.Slice(kv, dm, dm));
        }
        var qkv = graph.Linear(tokens, layer.Param(graph, "qkv.weight"), qkvBias ? layer.Param(graph, "qkv.bias") : null);
        return (graph.Slice(qkv, 0, dm), graph.Slice(qkv, dm, dm), graph.Slice(qkv, 2 * dm, dm));
    }
}
