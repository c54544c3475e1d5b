namespace Attention.Native.Variants;

/// <summary>
/// What the PVT forms of agent and flatten share (docs/vision-forms.md §0–2): the token grid of an input, the queries, the
/// spatially reduced keys' input, and the 2-D pooling, each written with the graph's ops.
/// </summary>
internal static class VisionPvt
{
    /// <summary>The LayerNorm after the spatial reduction: PyTorch's default eps (the attention's own <c>nn.LayerNorm(dim)</c>).</summary>
    public const float NormEpsilon = 1e-5f;

    /// <summary>
    /// Checks <paramref name="x"/>: <c>[B, grid_h·grid_w, C]</c> (the built grid) or <c>[B, H, W, C]</c> (any grid whose sides
    /// <paramref name="srRatio"/> divides).
    /// </summary>
    public static void CheckInput(AttentionLayer layer, Tensor x, string name, int gridHeight, int gridWidth, int srRatio)
    {
        if (x.Shape.Rank == 4)
        {
            layer.CheckTokens(x.Reshape(new Shape(x.Shape[0], x.Shape[1] * x.Shape[2], x.Shape[3])), name, batch: null);
            if (x.Shape[1] % srRatio != 0 || x.Shape[2] % srRatio != 0)
            {
                throw new ArgumentException($"{name}: expected a grid [B, H, W, {layer.Config.DModel}] whose H and W sr_ratio = {srRatio} divides, actual {x.Shape}", name);
            }
            return;
        }
        layer.CheckTokens(x, name, batch: null);
        if (x.Shape[1] != gridHeight * gridWidth)
        {
            throw new ArgumentException($"{name}: expected [B, grid_h·grid_w = {gridHeight * gridWidth}, {layer.Config.DModel}] (the built {gridHeight}×{gridWidth} grid; pass [B, H, W, {layer.Config.DModel}] for another grid), actual {x.Shape}", name);
        }
    }

    /// <summary>The grid of an input that passed <see cref="CheckInput"/>.</summary>
    public static (int Height, int Width) Grid(Node x, int gridHeight, int gridWidth) =>
        x.Shape.Rank == 4 ? (x.Shape[1], x.Shape[2]) : (gridHeight, gridWidth);

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
}
