namespace Attention.Native.Tests.Variants.Vision;

/// <summary>
/// The PVT forms of agent and flatten attention (docs/vision-forms.md) as plain loops over <see cref="double"/> arrays: every
/// interpolation, pooling, convolution and norm written per element, independent of torch and of the library. The torch
/// reference (<see cref="VisionTorchReference"/>) is held to these. Arrays are row-major; x and y are [B, N, C].
/// </summary>
internal static class VisionLoops
{
    /// <summary>
    /// The two source indices and weights of PyTorch's linear interpolation along one axis with align_corners false:
    /// src = (in/out)·(dst + 0.5) − 0.5, clamped at 0; i0 = ⌊src⌋, i1 = min(i0 + 1, in − 1), weights 1 − λ and λ = src − i0.
    /// </summary>
    public static (int I0, int I1, double W0, double W1) Source(int dst, int inSize, int outSize)
    {
        double src = ((double)inSize / outSize * (dst + 0.5)) - 0.5;
        src = Math.Max(src, 0);
        int i0 = (int)src;
        double lambda = src - i0;
        return (i0, Math.Min(i0 + 1, inSize - 1), 1 - lambda, lambda);
    }

    /// <summary>Bilinear (align_corners false) of planes [planes, inH, inW] → [planes, outH, outW].</summary>
    public static double[] Bilinear(double[] a, int planes, int inH, int inW, int outH, int outW)
    {
        var y = new double[planes * outH * outW];
        for (int p = 0; p < planes; p++)
        {
            for (int i = 0; i < outH; i++)
            {
                var (r0, r1, u0, u1) = Source(i, inH, outH);
                for (int j = 0; j < outW; j++)
                {
                    var (c0, c1, v0, v1) = Source(j, inW, outW);
                    double At(int r, int c) => a[(((p * inH) + r) * inW) + c];
                    y[(((p * outH) + i) * outW) + j] = (u0 * ((v0 * At(r0, c0)) + (v1 * At(r0, c1)))) + (u1 * ((v0 * At(r1, c0)) + (v1 * At(r1, c1))));
                }
            }
        }
        return y;
    }

    /// <summary>Linear (align_corners false) of rows [rows, inLength] → [rows, outLength].</summary>
    public static double[] Linear(double[] a, int rows, int inLength, int outLength)
    {
        var y = new double[rows * outLength];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < outLength; j++)
            {
                var (i0, i1, w0, w1) = Source(j, inLength, outLength);
                y[(r * outLength) + j] = (w0 * a[(r * inLength) + i0]) + (w1 * a[(r * inLength) + i1]);
            }
        }
        return y;
    }

    /// <summary>
    /// AdaptiveAvgPool2d of planes [planes, H, W] → [planes, oh, ow]: cell (i, j) averages rows ⌊iH/oh⌋ … ⌈(i+1)H/oh⌉ − 1
    /// and columns ⌊jW/ow⌋ … ⌈(j+1)W/ow⌉ − 1.
    /// </summary>
    public static double[] AdaptivePool(double[] a, int planes, int height, int width, int oh, int ow)
    {
        var y = new double[planes * oh * ow];
        for (int p = 0; p < planes; p++)
        {
            for (int i = 0; i < oh; i++)
            {
                int r0 = i * height / oh, r1 = (((i + 1) * height) + oh - 1) / oh;
                for (int j = 0; j < ow; j++)
                {
                    int c0 = j * width / ow, c1 = (((j + 1) * width) + ow - 1) / ow;
                    double sum = 0;
                    for (int r = r0; r < r1; r++)
                    {
                        for (int c = c0; c < c1; c++)
                        {
                            sum += a[(((p * height) + r) * width) + c];
                        }
                    }
                    y[(((p * oh) + i) * ow) + j] = sum / ((r1 - r0) * (c1 - c0));
                }
            }
        }
        return y;
    }

    /// <summary>
    /// Depthwise k×k convolution (zero padding k/2, k odd) of planes [planes, H, W]: plane p through filter
    /// <paramref name="filterOf"/>(p) of weight [filters, 1, k, k], plus that filter's bias.
    /// </summary>
    public static double[] DepthwiseConv(double[] a, int planes, int height, int width, double[] weight, double[] bias, int k, Func<int, int> filterOf)
    {
        int pad = k / 2;
        var y = new double[planes * height * width];
        for (int p = 0; p < planes; p++)
        {
            int f = filterOf(p);
            for (int i = 0; i < height; i++)
            {
                for (int j = 0; j < width; j++)
                {
                    double sum = bias[f];
                    for (int u = 0; u < k; u++)
                    {
                        for (int v = 0; v < k; v++)
                        {
                            int r = i + u - pad, c = j + v - pad;
                            if (r >= 0 && r < height && c >= 0 && c < width)
                            {
                                sum += weight[(((f * k) + u) * k) + v] * a[(((p * height) + r) * width) + c];
                            }
                        }
                    }
                    y[(((p * height) + i) * width) + j] = sum;
                }
            }
        }
        return y;
    }

    /// <summary>Tokens [B, N, C] as planes [B·C, H, W] (token t = row·W + column).</summary>
    public static double[] ToPlanes(double[] tokens, int batch, int n, int channels)
    {
        var y = new double[tokens.Length];
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < n; t++)
            {
                for (int ch = 0; ch < channels; ch++)
                {
                    y[(((b * channels) + ch) * n) + t] = tokens[(((b * n) + t) * channels) + ch];
                }
            }
        }
        return y;
    }

    /// <summary>Planes [B·C, N] back to tokens [B, N, C].</summary>
    public static double[] ToTokens(double[] planes, int batch, int n, int channels)
    {
        var y = new double[planes.Length];
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < n; t++)
            {
                for (int ch = 0; ch < channels; ch++)
                {
                    y[(((b * n) + t) * channels) + ch] = planes[(((b * channels) + ch) * n) + t];
                }
            }
        }
        return y;
    }

    /// <summary>
    /// The keys' and values' input: x, or with r &gt; 1 the Conv2d r×r stride r of x as an image (sr) followed by LayerNorm over
    /// each token's channels (norm, eps 1e-5) → [B, (H/r)(W/r), C].
    /// </summary>
    public static double[] Reduced(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int height, int width, int dm, int r)
    {
        if (r == 1)
        {
            return x;
        }
        int n = height * width, kh = height / r, kw = width / r, keys = kh * kw;
        var image = ToPlanes(x, batch, n, dm);
        var sw = w["sr.weight"];
        var sb = w["sr.bias"];
        var y = new double[batch * keys * dm];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < kh; i++)
            {
                for (int j = 0; j < kw; j++)
                {
                    int row = (b * keys) + (i * kw) + j;
                    for (int o = 0; o < dm; o++)
                    {
                        double sum = sb[o];
                        for (int ch = 0; ch < dm; ch++)
                        {
                            for (int u = 0; u < r; u++)
                            {
                                for (int v = 0; v < r; v++)
                                {
                                    sum += sw[(((((o * dm) + ch) * r) + u) * r) + v] * image[(((((b * dm) + ch) * height) + (i * r) + u) * width) + (j * r) + v];
                                }
                            }
                        }
                        y[(row * dm) + o] = sum;
                    }
                    double mean = 0, variance = 0;
                    for (int o = 0; o < dm; o++)
                    {
                        mean += y[(row * dm) + o] / dm;
                    }
                    for (int o = 0; o < dm; o++)
                    {
                        variance += Math.Pow(y[(row * dm) + o] - mean, 2) / dm;
                    }
                    for (int o = 0; o < dm; o++)
                    {
                        y[(row * dm) + o] = ((y[(row * dm) + o] - mean) / Math.Sqrt(variance + VisionTorchReference.NormEpsilon) * w["norm.weight"][o]) + w["norm.bias"][o];
                    }
                }
            }
        }
        return y;
    }

    /// <summary>agent-pvt: y [B, N, C] of x [B, N, C] on an H×W grid (docs/vision-forms.md §1).</summary>
    public static double[] AgentPvt(AgentPvtConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int height, int width)
    {
        int dm = c.DModel, heads = c.Heads, d = c.HeadDim, r = c.SrRatio, n = height * width;
        int kh = height / r, kw = width / r, keys = kh * kw, na = c.Agents, side = c.AgentSide;
        var (ph, pw) = c.Pool;
        int agents = ph * pw;
        double s = 1 / Math.Sqrt(d);
        var q = FormulaKit.Dense(x, batch * n, dm, w["q.weight"], c.QkvBias ? w["q.bias"] : null, dm);
        var kv = FormulaKit.Dense(Reduced(w, x, batch, height, width, dm, r), batch * keys, dm, w["kv.weight"], c.QkvBias ? w["kv.bias"] : null, 2 * dm);
        double K(int b, int key, int ch) => kv[(((b * keys) + key) * 2 * dm) + ch];
        double V(int b, int key, int ch) => kv[(((b * keys) + key) * 2 * dm) + dm + ch];
        // Agents [B, C, ph·pw]: q's planes pooled.
        var a = AdaptivePool(ToPlanes(q, batch, n, dm), batch * dm, height, width, ph, pw);
        double A(int b, int agent, int ch) => a[(((b * dm) + ch) * agents) + agent];

        // b1 [h, n, keys] = an_bias bilinear to the key grid + (ah_bias[i] + aw_bias[j]) on (or bilinear to) that grid.
        int gh = c.GridH / r, gw = c.GridW / r;
        var rowCol1 = new double[heads * na * gh * gw];
        for (int p = 0; p < heads * na; p++)
        {
            for (int i = 0; i < gh; i++)
            {
                for (int j = 0; j < gw; j++)
                {
                    rowCol1[(((p * gh) + i) * gw) + j] = w["ah_bias"][(p * gh) + i] + w["aw_bias"][(p * gw) + j];
                }
            }
        }
        var b1 = Sum(Bilinear(w["an_bias"], heads * na, 7, 7, kh, kw), gh == kh && gw == kw ? rowCol1 : Bilinear(rowCol1, heads * na, gh, gw, kh, kw));
        // b2 [h, n, N] = na_bias bilinear to the query grid + (ha_bias[i] + wa_bias[j]).
        var rowCol2 = new double[heads * na * c.GridH * c.GridW];
        for (int h = 0; h < heads; h++)
        {
            for (int ag = 0; ag < na; ag++)
            {
                for (int i = 0; i < c.GridH; i++)
                {
                    for (int j = 0; j < c.GridW; j++)
                    {
                        rowCol2[(((((h * na) + ag) * c.GridH) + i) * c.GridW) + j] = w["ha_bias"][(((h * c.GridH) + i) * na) + ag] + w["wa_bias"][(((h * c.GridW) + j) * na) + ag];
                    }
                }
            }
        }
        var b2 = Sum(Bilinear(w["na_bias"], heads * na, 7, 7, height, width),
            c.GridH == height && c.GridW == width ? rowCol2 : Bilinear(rowCol2, heads * na, c.GridH, c.GridW, height, width));
        // On another agent grid: the agent axes (√n×√n) bilinear to ph×pw, per head and position.
        double[] Agents(double[] bias, int positions)
        {
            var perPosition = new double[heads * positions * na];
            for (int h = 0; h < heads; h++)
            {
                for (int ag = 0; ag < na; ag++)
                {
                    for (int t = 0; t < positions; t++)
                    {
                        perPosition[(((h * positions) + t) * na) + ag] = bias[(((h * na) + ag) * positions) + t];
                    }
                }
            }
            return ph == side && pw == side ? perPosition : Bilinear(perPosition, heads * positions, side, side, ph, pw);
        }
        var bias1 = Agents(b1, keys);  // [h, keys, agents]
        var bias2 = Agents(b2, n);     // [h, N, agents]

        var o = new double[batch * n * dm];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                var agentValues = new double[agents * d];
                for (int ag = 0; ag < agents; ag++)
                {
                    var scores = new double[keys];
                    for (int key = 0; key < keys; key++)
                    {
                        double dot = 0;
                        for (int i = 0; i < d; i++)
                        {
                            dot += A(b, ag, (h * d) + i) * K(b, key, (h * d) + i);
                        }
                        scores[key] = (s * dot) + bias1[(((h * keys) + key) * agents) + ag];
                    }
                    var p1 = Softmax(scores);
                    for (int key = 0; key < keys; key++)
                    {
                        for (int i = 0; i < d; i++)
                        {
                            agentValues[(ag * d) + i] += p1[key] * V(b, key, (h * d) + i);
                        }
                    }
                }
                for (int t = 0; t < n; t++)
                {
                    var scores = new double[agents];
                    for (int ag = 0; ag < agents; ag++)
                    {
                        double dot = 0;
                        for (int i = 0; i < d; i++)
                        {
                            dot += q[(((b * n) + t) * dm) + (h * d) + i] * A(b, ag, (h * d) + i);
                        }
                        scores[ag] = (s * dot) + bias2[(((h * n) + t) * agents) + ag];
                    }
                    var p2 = Softmax(scores);
                    for (int ag = 0; ag < agents; ag++)
                    {
                        for (int i = 0; i < d; i++)
                        {
                            o[(((b * n) + t) * dm) + (h * d) + i] += p2[ag] * agentValues[(ag * d) + i];
                        }
                    }
                }
            }
        }
        // v's planes on the key grid, bilinear to H×W when reduced, through the depthwise conv (filter = channel).
        var vPlanes = new double[batch * dm * keys];
        for (int b = 0; b < batch; b++)
        {
            for (int key = 0; key < keys; key++)
            {
                for (int ch = 0; ch < dm; ch++)
                {
                    vPlanes[(((b * dm) + ch) * keys) + key] = V(b, key, ch);
                }
            }
        }
        if (r > 1)
        {
            vPlanes = Bilinear(vPlanes, batch * dm, kh, kw, height, width);
        }
        var conv = ToTokens(DepthwiseConv(vPlanes, batch * dm, height, width, w["dwc.weight"], w["dwc.bias"], c.DwcKernel, p => p % dm), batch, n, dm);
        return FormulaKit.Dense(Sum(o, conv), batch * n, dm, w["proj.weight"], w["proj.bias"], dm);
    }

    /// <summary>flatten-pvt: y [B, N, C] of x [B, N, C] on an H×W grid (docs/vision-forms.md §2).</summary>
    public static double[] FlattenPvt(FlattenPvtConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int height, int width)
    {
        int dm = c.DModel, heads = c.Heads, d = c.HeadDim, r = c.SrRatio, n = height * width;
        int kh = height / r, kw = width / r, keys = kh * kw, gh = c.GridH / r, gw = c.GridW / r;
        var q = FormulaKit.Dense(x, batch * n, dm, w["q.weight"], c.QkvBias ? w["q.bias"] : null, dm);
        var kv = FormulaKit.Dense(Reduced(w, x, batch, height, width, dm, r), batch * keys, dm, w["kv.weight"], c.QkvBias ? w["kv.bias"] : null, 2 * dm);
        var k = new double[batch * keys * dm];
        var v = new double[batch * keys * dm];
        // The positional encoding [T', C] on the key grid: as it is, or its planes bilinear from the grid it was made for.
        var pos = w["positional_encoding"];
        if (gh != kh || gw != kw)
        {
            pos = ToTokens(Bilinear(ToPlanes(pos, 1, gh * gw, dm), dm, gh, gw, kh, kw), 1, keys, dm);
        }
        for (int row = 0; row < batch * keys; row++)
        {
            for (int ch = 0; ch < dm; ch++)
            {
                k[(row * dm) + ch] = kv[(row * 2 * dm) + ch] + pos[((row % keys) * dm) + ch];
                v[(row * dm) + ch] = kv[(row * 2 * dm) + dm + ch];
            }
        }
        var sc = w["scale"].Select(e => Math.Log(1 + Math.Exp(e))).ToArray();
        void Focus(double[] a)
        {
            for (int row = 0; row < a.Length / dm; row++)
            {
                var z = new double[dm];
                for (int ch = 0; ch < dm; ch++)
                {
                    z[ch] = (Math.Max(a[(row * dm) + ch], 0) + 1e-6) / sc[ch];
                }
                double norm = Math.Sqrt(z.Sum(e => e * e));
                var powered = z.Select(e => Math.Pow(e, c.FocusingFactor)).ToArray();
                double poweredNorm = Math.Sqrt(powered.Sum(e => e * e));
                for (int ch = 0; ch < dm; ch++)
                {
                    a[(row * dm) + ch] = powered[ch] / poweredNorm * norm;
                }
            }
        }
        Focus(q);
        Focus(k);
        var o = new double[batch * n * dm];
        // v per head as rows [B·h·d, T'] (then the planes of the depthwise conv).
        var vRows = new double[batch * heads * d * keys];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                var meanK = new double[d];
                var kvProduct = new double[d * d];
                for (int key = 0; key < keys; key++)
                {
                    int row = (b * keys) + key;
                    for (int i = 0; i < d; i++)
                    {
                        meanK[i] += k[(row * dm) + (h * d) + i] / keys;
                        vRows[(((((b * heads) + h) * d) + i) * keys) + key] = v[(row * dm) + (h * d) + i];
                        for (int j = 0; j < d; j++)
                        {
                            kvProduct[(i * d) + j] += k[(row * dm) + (h * d) + i] * v[(row * dm) + (h * d) + j] / keys;
                        }
                    }
                }
                for (int t = 0; t < n; t++)
                {
                    int row = (b * n) + t;
                    double denominator = 1e-6;
                    for (int i = 0; i < d; i++)
                    {
                        denominator += q[(row * dm) + (h * d) + i] * meanK[i];
                    }
                    for (int j = 0; j < d; j++)
                    {
                        double sum = 0;
                        for (int i = 0; i < d; i++)
                        {
                            sum += q[(row * dm) + (h * d) + i] * kvProduct[(i * d) + j];
                        }
                        o[(row * dm) + (h * d) + j] = sum / denominator;
                    }
                }
            }
        }
        if (r > 1)
        {
            vRows = Linear(vRows, batch * heads * d, keys, n);
        }
        // Plane (b·h + head)·d + j is channel head·d + j of token row b; its filter is j, shared by the heads.
        var conv = ToTokens(DepthwiseConv(vRows, batch * heads * d, height, width, w["dwc.weight"], w["dwc.bias"], c.DwcKernel, p => p % d), batch, n, dm);
        return FormulaKit.Dense(Sum(o, conv), batch * n, dm, w["proj.weight"], w["proj.bias"], dm);
    }

    private static double[] Sum(double[] a, double[] b) => [.. a.Zip(b, (u, v) => u + v)];

    private static double[] Softmax(double[] scores)
    {
        double max = scores.Max();
        var e = scores.Select(v => Math.Exp(v - max)).ToArray();
        double total = e.Sum();
        return [.. e.Select(v => v / total)];
    }
}
