namespace Attention.Native.Tests.Variants;

/// <summary>
/// The official modules' forwards in F64, written from their published code's math (cited per module) under their own tensor
/// names and conventions, never through variants.md's names or the library: HF <c>LlamaAttention</c>, DeepSeek-V2/V3's HF
/// <c>DeepseekV2Attention</c> with its YaRN rotary embedding, T6's <c>CausalSelfAttention</c>, the <c>SAS</c> module,
/// TransNormerLLM's <c>NormLinearAttention</c> and Step-3's attention (vLLM <c>Step3TextAttention</c>). Each takes the official
/// state_dict as arrays and x [batch, tokens, d_model] and returns y of the same layout. These are the golden references of the
/// checkpoint layouts: a layer loaded from the same tensors through its layout must give these outputs.
/// </summary>
internal static class OfficialModules
{
    /// <summary>HF LlamaAttention (modeling_llama.py): rotate_half RoPE on q and k, repeat_kv groups, scale head_dim^-0.5, causal.</summary>
    public static double[] Llama(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens, int hidden, int heads, int kvHeads, int headDim, double theta)
    {
        int n = batch * tokens;
        var q = FormulaKit.Dense(x, n, hidden, w["q_proj.weight"], null, heads * headDim);
        var k = FormulaKit.Dense(x, n, hidden, w["k_proj.weight"], null, kvHeads * headDim);
        var v = FormulaKit.Dense(x, n, hidden, w["v_proj.weight"], null, kvHeads * headDim);
        var (cos, sin) = CosSin(InverseFrequencies(headDim, theta), tokens, 1.0);
        RotateHalfEmbed(q, batch, tokens, heads, headDim, 0, headDim, cos, sin, deinterleave: false);
        RotateHalfEmbed(k, batch, tokens, kvHeads, headDim, 0, headDim, cos, sin, deinterleave: false);
        int repeats = heads / kvHeads;
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, heads, kvHeads, headDim, headDim, i => i / repeats, 1 / Math.Sqrt(headDim), causal: true);
        return FormulaKit.Dense(o, n, heads * headDim, w["o_proj.weight"], null, hidden);
    }

    /// <summary>DeepSeek's YaRN settings as its HF config writes them (<c>rope_scaling</c>).</summary>
    public sealed record Yarn(double Factor, int Original, double BetaFast, double BetaSlow, double MScale, double MScaleAllDim);

    /// <summary>
    /// DeepSeek-V2/V3's MLA (HF <c>modeling_deepseek.py</c>): q through <c>q_a_proj → q_a_layernorm → q_b_proj</c> (or
    /// <c>q_proj</c>), <c>kv_a_proj_with_mqa</c> split into the latent and k_pe, <c>kv_a_layernorm</c> (ε 1e-6) and
    /// <c>kv_b_proj</c> into k_nope and v; q_pe and k_pe de-interleaved (<c>view(d/2, 2).transpose</c>) and rotated with
    /// rotate_half by the YaRN embedding (<c>DeepseekV2YarnRotaryEmbedding</c>: blended inverse frequencies, cos and sin times
    /// <c>get_mscale(s, mscale)/get_mscale(s, mscale_all_dim)</c>); the softmax scale is <c>q_head_dim^-0.5 ·
    /// get_mscale(s, mscale_all_dim)²</c> when <c>mscale_all_dim</c> is non-zero.
    /// </summary>
    public static double[] DeepSeek(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens, int hidden, int heads,
        int qLoraRank, int kvLoraRank, int nope, int rope, int vDim, double theta, Yarn? yarn)
    {
        int n = batch * tokens, qk = nope + rope;
        var q = qLoraRank > 0
            ? FormulaKit.Dense(Norm(FormulaKit.Dense(x, n, hidden, w["q_a_proj.weight"], null, qLoraRank), n, qLoraRank, w["q_a_layernorm.weight"], 1e-6),
                n, qLoraRank, w["q_b_proj.weight"], null, heads * qk)
            : FormulaKit.Dense(x, n, hidden, w["q_proj.weight"], null, heads * qk);
        var compressed = FormulaKit.Dense(x, n, hidden, w["kv_a_proj_with_mqa.weight"], null, kvLoraRank + rope);
        var latent = new double[n * kvLoraRank];
        var kPe = new double[n * rope];
        for (int r = 0; r < n; r++)
        {
            Array.Copy(compressed, r * (kvLoraRank + rope), latent, r * kvLoraRank, kvLoraRank);
            Array.Copy(compressed, (r * (kvLoraRank + rope)) + kvLoraRank, kPe, r * rope, rope);
        }
        var kv = FormulaKit.Dense(Norm(latent, n, kvLoraRank, w["kv_a_layernorm.weight"], 1e-6), n, kvLoraRank, w["kv_b_proj.weight"], null, heads * (nope + vDim));
        double[] inverse = InverseFrequencies(rope, theta);
        double amplitude = 1, scale = 1 / Math.Sqrt(qk);
        if (yarn is not null)
        {
            inverse = YarnInverseFrequencies(rope, theta, yarn);
            amplitude = GetMScale(yarn.Factor, yarn.MScale) / GetMScale(yarn.Factor, yarn.MScaleAllDim);
            if (yarn.MScaleAllDim != 0)
            {
                double m = GetMScale(yarn.Factor, yarn.MScaleAllDim);
                scale *= m * m;
            }
        }
        var (cos, sin) = CosSin(inverse, tokens, amplitude);
        RotateHalfEmbed(q, batch, tokens, heads, qk, nope, rope, cos, sin, deinterleave: true);
        RotateHalfEmbed(kPe, batch, tokens, 1, rope, 0, rope, cos, sin, deinterleave: true);
        // query_states = [q_nope | q_pe]; key_states = [k_nope | k_pe] with the one k_pe broadcast to every head.
        var key = new double[n * heads * qk];
        var value = new double[n * heads * vDim];
        for (int r = 0; r < n; r++)
        {
            for (int h = 0; h < heads; h++)
            {
                Array.Copy(kv, ((r * heads) + h) * (nope + vDim), key, ((r * heads) + h) * qk, nope);
                Array.Copy(kPe, r * rope, key, (((r * heads) + h) * qk) + nope, rope);
                Array.Copy(kv, (((r * heads) + h) * (nope + vDim)) + nope, value, ((r * heads) + h) * vDim, vDim);
            }
        }
        var o = FormulaKit.SoftmaxAttention(q, key, value, batch, tokens, heads, heads, qk, vDim, i => i, scale, causal: true);
        return FormulaKit.Dense(o, n, heads * vDim, w["o_proj.weight"], null, hidden);
    }

    /// <summary>
    /// T6's CausalSelfAttention (tensorgi/T6 model/T6.py): A [H, R] and B [R, d] factors from <c>c_qkv.W_*</c>, B_q and B_k
    /// turned by T6's <c>apply_rotary_emb</c> (halves, y₁ = x₁cos + x₂sin, y₂ = −x₁sin + x₂cos, base 10000), q = A_q B_q / q_rank,
    /// k and v over <c>rank</c>; causal SDPA; with <c>using_groupnorm</c> the RMSNorm <c>subln</c> (ε 1e-5) of each head's output;
    /// <c>c_proj</c>.
    /// </summary>
    public static double[] T6(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens, int embed, int heads, int headDim, int qRank, int rank, bool subln)
    {
        int n = batch * tokens;
        var inverse = InverseFrequencies(headDim, 10000);
        double[] Stream(string s, int r, bool rotate)
        {
            var a = FormulaKit.Dense(x, n, embed, w[$"c_qkv.W_A_{s}.weight"], null, heads * r);
            var b = FormulaKit.Dense(x, n, embed, w[$"c_qkv.W_B_{s}.weight"], null, r * headDim);
            if (rotate)
            {
                int half = headDim / 2;
                for (int row = 0; row < n; row++)
                {
                    int t = row % tokens;
                    for (int rr = 0; rr < r; rr++)
                    {
                        int start = ((row * r) + rr) * headDim;
                        for (int j = 0; j < half; j++)
                        {
                            double c = Math.Cos(t * inverse[j]), sn = Math.Sin(t * inverse[j]);
                            double x1 = b[start + j], x2 = b[start + half + j];
                            b[start + j] = (x1 * c) + (x2 * sn);
                            b[start + half + j] = (x1 * -sn) + (x2 * c);
                        }
                    }
                }
            }
            var result = new double[n * heads * headDim];
            for (int row = 0; row < n; row++)
            {
                for (int h = 0; h < heads; h++)
                {
                    for (int i = 0; i < headDim; i++)
                    {
                        double sum = 0;
                        for (int rr = 0; rr < r; rr++)
                        {
                            sum += a[(((row * heads) + h) * r) + rr] * b[(((row * r) + rr) * headDim) + i];
                        }
                        result[(((row * heads) + h) * headDim) + i] = sum / r;
                    }
                }
            }
            return result;
        }
        var q = Stream("q", qRank, rotate: true);
        var k = Stream("k", rank, rotate: true);
        var v = Stream("v", rank, rotate: false);
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, heads, heads, headDim, headDim, i => i, 1 / Math.Sqrt(headDim), causal: true);
        if (subln)
        {
            o = Norm(o, n * heads, headDim, w["subln.weight"], 1e-5);
        }
        return FormulaKit.Dense(o, n, heads * headDim, w["c_proj.weight"], null, embed);
    }

    /// <summary>
    /// The SAS module (chuanyang-Zheng/SAS SAS.py) after the projections <c>w_q, w_k, w_v</c>: per token the [H, D] q is
    /// <c>sas_q</c> = Conv1d(H→H′) over the feature axis, ResidualCNN (h + Conv1d(ReLU h)), Linear(D→D′), ResidualMLP
    /// (h + Linear(ReLU h)); likewise k; v only the two convolution stages; causal SDPA (scale D′^-0.5); the [H′, D] output
    /// viewed as H′/H groups of H·D, <c>output_dense</c> applied to each group, then the mean over groups.
    /// </summary>
    public static double[] Sas(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens, int heads, int dim, int simHeads, int simDim, int kernel)
    {
        int n = batch * tokens, model = heads * dim;
        double[] Stream(string s, string projection, bool features)
        {
            var p = FormulaKit.Dense(x, n, model, w[projection], null, heads * dim);
            var result = new double[n * simHeads * (features ? simDim : dim)];
            for (int row = 0; row < n; row++)
            {
                var token = p.AsSpan(row * heads * dim, heads * dim).ToArray();
                var h1 = Conv1d(token, heads, dim, w[$"sas_{s}.0.weight"], w[$"sas_{s}.0.bias"], simHeads, kernel);
                var h2 = Conv1d(h1.Select(Relu).ToArray(), simHeads, dim, w[$"sas_{s}.1.process.weight"], w[$"sas_{s}.1.process.bias"], simHeads, kernel);
                var stage = h1.Zip(h2, (a, b) => a + b).ToArray();
                if (features)
                {
                    var y1 = FormulaKit.Dense(stage, simHeads, dim, w[$"sas_{s}.2.weight"], w[$"sas_{s}.2.bias"], simDim);
                    var y2 = FormulaKit.Dense(y1.Select(Relu).ToArray(), simHeads, simDim, w[$"sas_{s}.3.process.weight"], w[$"sas_{s}.3.process.bias"], simDim);
                    stage = y1.Zip(y2, (a, b) => a + b).ToArray();
                }
                stage.CopyTo(result, row * stage.Length);
            }
            return result;
        }
        var q = Stream("q", "w_q", features: true);
        var k = Stream("k", "w_k", features: true);
        var v = Stream("v", "w_v", features: false);
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, simHeads, simHeads, simDim, dim, i => i, 1 / Math.Sqrt(simDim), causal: true);
        int groups = simHeads / heads;
        var grouped = FormulaKit.Dense(o, n * groups, model, w["output_dense.weight"], w["output_dense.bias"], model);
        var y = new double[n * model];
        for (int row = 0; row < n; row++)
        {
            for (int g = 0; g < groups; g++)
            {
                for (int c = 0; c < model; c++)
                {
                    y[(row * model) + c] += grouped[(((row * groups) + g) * model) + c] / groups;
                }
            }
        }
        return y;
    }

    /// <summary>
    /// TransNormerLLM's NormLinearAttention (modeling_transnormer.py): <c>qkvu_proj</c> chunked into q, k, v, u; SiLU on q and
    /// k; with LRPE <c>[x cos(θ t) | x sin(θ t)]</c> from <c>lrpe.theta [H, 1, d]</c>; o_t = Σ_{s≤t} exp(−slope·(t−s)) (q_t·k_s) v_s
    /// with the model's ALiBi slopes (<c>get_slopes</c>) times <c>1 − l/(L−1) + 1e-5</c>; SimpleRMSNorm (ε 1e-6) over all
    /// heads; <c>u ⊙ o</c>; <c>out_proj</c>.
    /// </summary>
    public static double[] TransNormer(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens, int embed, int heads, int layer, int layers, bool lrpe)
    {
        int n = batch * tokens, hidden = w["qkvu_proj.weight"].Length / embed / 4, d = hidden / heads;
        var qkvu = FormulaKit.Dense(x, n, embed, w["qkvu_proj.weight"], null, 4 * hidden);
        double Chunk(int row, int chunk, int c) => qkvu[(row * 4 * hidden) + (chunk * hidden) + c];
        static double Silu(double value) => value / (1 + Math.Exp(-value));
        var slopes = Slopes(heads).Select(m => m * (1 - ((double)layer / (layers - 1)) + 1e-5)).ToArray();
        int dk = lrpe ? 2 * d : d;
        double[] Feature(int row, int h, int chunk)
        {
            int t = row % tokens;
            var f = new double[dk];
            for (int i = 0; i < d; i++)
            {
                double value = Silu(Chunk(row, chunk, (h * d) + i));
                if (lrpe)
                {
                    double angle = w["lrpe.theta"][(h * d) + i] * t;
                    f[i] = value * Math.Cos(angle);
                    f[d + i] = value * Math.Sin(angle);
                }
                else
                {
                    f[i] = value;
                }
            }
            return f;
        }
        var o = new double[n * hidden];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    var qt = Feature((b * tokens) + t, h, 0);
                    for (int s = 0; s <= t; s++)
                    {
                        var ks = Feature((b * tokens) + s, h, 1);
                        double dot = qt.Zip(ks, (a, c) => a * c).Sum() * Math.Exp(-slopes[h] * (t - s));
                        for (int i = 0; i < d; i++)
                        {
                            o[(((b * tokens) + t) * hidden) + (h * d) + i] += dot * Chunk((b * tokens) + s, 2, (h * d) + i);
                        }
                    }
                }
            }
        }
        var normed = Norm(o, n, hidden, null, 1e-6);
        for (int row = 0; row < n; row++)
        {
            for (int c = 0; c < hidden; c++)
            {
                normed[(row * hidden) + c] *= Chunk(row, 3, c);
            }
        }
        return FormulaKit.Dense(normed, n, hidden, w["out_proj.weight"], null, embed);
    }

    /// <summary>
    /// Step-3's attention (vLLM step3_text.py Step3TextAttention): q = <c>wq</c>(<c>inter_norm</c>(<c>q_proj</c> x)) with
    /// RMSNorm ε = rms_norm_eps, one key/value head from <c>k_proj</c>/<c>v_proj</c>, neox (rotate_half) RoPE on the whole
    /// head of q and k, causal attention with scale head_dim^-0.5, <c>o_proj</c>.
    /// </summary>
    public static double[] Step3(IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens, int hidden, int heads, int headDim, int shareQDim, double theta, double eps)
    {
        int n = batch * tokens;
        var q = FormulaKit.Dense(Norm(FormulaKit.Dense(x, n, hidden, w["q_proj.weight"], null, shareQDim), n, shareQDim, w["inter_norm.weight"], eps),
            n, shareQDim, w["wq.weight"], null, heads * headDim);
        var k = FormulaKit.Dense(x, n, hidden, w["k_proj.weight"], null, headDim);
        var v = FormulaKit.Dense(x, n, hidden, w["v_proj.weight"], null, headDim);
        var (cos, sin) = CosSin(InverseFrequencies(headDim, theta), tokens, 1.0);
        RotateHalfEmbed(q, batch, tokens, heads, headDim, 0, headDim, cos, sin, deinterleave: false);
        RotateHalfEmbed(k, batch, tokens, 1, headDim, 0, headDim, cos, sin, deinterleave: false);
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, heads, 1, headDim, headDim, _ => 0, 1 / Math.Sqrt(headDim), causal: true);
        return FormulaKit.Dense(o, n, heads * headDim, w["o_proj.weight"], null, hidden);
    }

    /// <summary>TransNormerLLM's <c>get_slopes</c>: 2^(-8(i+1)/n) for a power of two, else the power-of-two slopes and every other slope of 2P.</summary>
    public static double[] Slopes(int n)
    {
        static double[] PowerOfTwo(int count)
        {
            double start = Math.Pow(2, -Math.Pow(2, -(Math.Log2(count) - 3)));
            return Enumerable.Range(0, count).Select(i => start * Math.Pow(start, i)).ToArray();
        }
        if (Math.Log2(n) % 1 == 0)
        {
            return PowerOfTwo(n);
        }
        int closest = 1 << (int)Math.Floor(Math.Log2(n));
        return [.. PowerOfTwo(closest), .. Slopes(2 * closest).Where((_, i) => i % 2 == 0).Take(n - closest)];
    }

    /// <summary>1 / base^(arange(0, dim, 2) / dim), the rotary embeddings' <c>inv_freq</c>.</summary>
    public static double[] InverseFrequencies(int dim, double theta) =>
        Enumerable.Range(0, dim / 2).Select(j => 1 / Math.Pow(theta, 2.0 * j / dim)).ToArray();

    /// <summary>
    /// DeepseekV2YarnRotaryEmbedding's <c>inv_freq</c>: <c>freq_inter·(1 − mask) + freq_extra·mask</c> with
    /// <c>mask = 1 − linear_ramp(low, high, dim/2)</c> and (low, high) from <c>yarn_find_correction_range</c>.
    /// </summary>
    public static double[] YarnInverseFrequencies(int dim, double theta, Yarn yarn)
    {
        double CorrectionDim(double rotations) => dim * Math.Log(yarn.Original / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = Math.Max(Math.Floor(CorrectionDim(yarn.BetaFast)), 0);
        double high = Math.Min(Math.Ceiling(CorrectionDim(yarn.BetaSlow)), dim - 1);
        if (low == high)
        {
            high += 0.001;
        }
        var result = new double[dim / 2];
        for (int j = 0; j < dim / 2; j++)
        {
            double ramp = Math.Clamp((j - low) / (high - low), 0, 1);
            double extra = 1 / Math.Pow(theta, 2.0 * j / dim);
            double inter = 1 / (yarn.Factor * Math.Pow(theta, 2.0 * j / dim));
            double mask = 1 - ramp;
            result[j] = (inter * (1 - mask)) + (extra * mask);
        }
        return result;
    }

    /// <summary><c>yarn_get_mscale</c>: 1 for scale ≤ 1, else 0.1·mscale·ln(scale) + 1.</summary>
    public static double GetMScale(double scale, double mscale) => scale <= 1 ? 1 : (0.1 * mscale * Math.Log(scale)) + 1;

    private static double Relu(double value) => Math.Max(value, 0);

    // emb = cat(freqs, freqs): cos and sin per position over the full rotary width, times the embedding's amplitude.
    private static (double[][] Cos, double[][] Sin) CosSin(double[] inverse, int tokens, double amplitude)
    {
        int dim = 2 * inverse.Length;
        var cos = new double[tokens][];
        var sin = new double[tokens][];
        for (int t = 0; t < tokens; t++)
        {
            cos[t] = new double[dim];
            sin[t] = new double[dim];
            for (int i = 0; i < dim; i++)
            {
                double angle = t * inverse[i % inverse.Length];
                cos[t][i] = Math.Cos(angle) * amplitude;
                sin[t][i] = Math.Sin(angle) * amplitude;
            }
        }
        return (cos, sin);
    }

    // x·cos + rotate_half(x)·sin on columns [offset, offset + dim) of each row of data [batch, tokens, rows, width];
    // DeepSeek first de-interleaves those columns (view(dim/2, 2).transpose: evens, then odds).
    private static void RotateHalfEmbed(double[] data, int batch, int tokens, int rows, int width, int offset, int dim, double[][] cos, double[][] sin, bool deinterleave)
    {
        var v = new double[dim];
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < tokens; t++)
            {
                for (int r = 0; r < rows; r++)
                {
                    int start = (((((b * tokens) + t) * rows) + r) * width) + offset;
                    for (int i = 0; i < dim; i++)
                    {
                        v[i] = deinterleave ? data[start + (2 * (i % (dim / 2))) + (i / (dim / 2))] : data[start + i];
                    }
                    for (int i = 0; i < dim; i++)
                    {
                        double rotated = i < dim / 2 ? -v[i + (dim / 2)] : v[i - (dim / 2)];
                        data[start + i] = (v[i] * cos[t][i]) + (rotated * sin[t][i]);
                    }
                }
            }
        }
    }

    // RMSNorm of each row with an optional gain: x · rsqrt(mean(x²) + eps) · gain.
    private static double[] Norm(double[] rows, int n, int width, double[]? gain, double eps)
    {
        var y = new double[rows.Length];
        for (int r = 0; r < n; r++)
        {
            double mean = 0;
            for (int i = 0; i < width; i++)
            {
                mean += rows[(r * width) + i] * rows[(r * width) + i] / width;
            }
            double inverse = 1 / Math.Sqrt(mean + eps);
            for (int i = 0; i < width; i++)
            {
                y[(r * width) + i] = rows[(r * width) + i] * inverse * (gain?[i] ?? 1);
            }
        }
        return y;
    }

    // PyTorch Conv1d on one token's [inChannels, length] (channels = heads, length = feature axis): cross-correlation,
    // stride 1, zero padding (k − 1)/2, weight [out, in, k].
    private static double[] Conv1d(double[] input, int inChannels, int length, double[] weight, double[] bias, int outChannels, int kernel)
    {
        int pad = (kernel - 1) / 2;
        var y = new double[outChannels * length];
        for (int o = 0; o < outChannels; o++)
        {
            for (int p = 0; p < length; p++)
            {
                double sum = bias[o];
                for (int c = 0; c < inChannels; c++)
                {
                    for (int j = 0; j < kernel; j++)
                    {
                        int at = p + j - pad;
                        if (at >= 0 && at < length)
                        {
                            sum += weight[(((o * inChannels) + c) * kernel) + j] * input[(c * length) + at];
                        }
                    }
                }
                y[(o * length) + p] = sum;
            }
        }
        return y;
    }
}
