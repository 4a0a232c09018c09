"""The atlas's words as data: the table of contents (the seeds' order), the page chrome in English
and Chinese, Chinese names of the families and models, and each family's equations in LaTeX
(typeset to MathML at build time, so pages need no network and no script to show them).
"""

from __future__ import annotations

__all__ = ["SECTIONS", "section_of", "CHROME", "FAMILY_ZH", "MODEL_ZH", "EQUATIONS", "word", "zh_label"]

# The seeds' table of contents: (section id, English title, Chinese title, families in reading order).
SECTIONS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("linear", "Linear models", "线性模型", ("linear",)),
    ("mlp", "Multilayer perceptron", "多层感知机", ("mlp",)),
    ("cnn", "Convolutional networks", "卷积神经网络", ("lenet", "alexnet", "vgg", "nin", "googlenet", "resnet",
                                                      "densenet", "simple_cnn", "unet")),
    ("autoencoder", "Autoencoders", "自编码器", ("autoencoder",)),
    ("recurrent", "Recurrent networks", "循环神经网络", ("rnn",)),
    ("attention", "Attention and modern models", "注意力与现代模型", ("transformer", "bert", "gpt", "vit",
                                                                     "diffusion", "mamba")),
    ("graph", "Graph networks", "图神经网络", ("gcn",)),
    ("pointer", "Pointer networks", "指针网络", ("pointer",)),
]
OTHER_SECTION = ("other", "Other models", "其他模型")


def section_of(family: str) -> str:
    for sid, _, _, families in SECTIONS:
        if family in families:
            return sid
    return OTHER_SECTION[0]


FAMILY_ZH: dict[str, str] = {
    "linear": "线性模型",
    "mlp": "多层感知机",
    "lenet": "LeNet 卷积网络",
    "alexnet": "AlexNet 深度卷积网络",
    "vgg": "VGG 块网络",
    "nin": "网络中的网络",
    "googlenet": "GoogLeNet 含并行连结的网络",
    "resnet": "残差网络",
    "densenet": "稠密连接网络",
    "simple_cnn": "简单卷积网络",
    "unet": "U-Net 语义分割网络",
    "autoencoder": "自编码器",
    "rnn": "循环神经网络",
    "transformer": "Transformer 注意力模型",
    "bert": "BERT 双向编码器",
    "gpt": "GPT 生成式预训练模型",
    "vit": "视觉 Transformer",
    "diffusion": "扩散模型",
    "mamba": "Mamba 选择性状态空间模型",
    "gcn": "图卷积网络",
    "pointer": "指针网络",
}

MODEL_ZH: dict[str, str] = {
    "linear_regression": "线性回归",
    "logistic_regression": "逻辑回归",
    "softmax_regression": "Softmax 回归",
    "mlp": "多层感知机",
    "stacked_ae": "栈式自编码器",
    "denoising_ae": "去噪自编码器",
    "vae": "变分自编码器",
    "conv_ae": "卷积自编码器",
    "time_rnn": "时序 RNN",
    "nlp_rnn": "NLP RNN 语言模型",
    "rnn": "RNN 单元",
    "lstm": "长短期记忆网络 (LSTM)",
    "gru": "门控循环单元 (GRU)",
    "char_rnn": "字符级 RNN 分类器",
    "gnn": "图神经网络",
    "gcn": "图卷积网络",
    "pointer_net": "指针网络",
    "ddpm": "去噪扩散概率模型",
    "ddpm_tiny": "去噪扩散概率模型（小）",
}


def zh_label(name: str, family: str) -> str:
    """The Chinese label of a model: its own where one is written, else its family's."""
    return MODEL_ZH.get(name) or FAMILY_ZH.get(family, "")


# Page chrome: key -> (English, Chinese).
CHROME: dict[str, tuple[str, str]] = {
    "site_title": ("nnatlas: the atlas of classic neural networks", "nnatlas：经典神经网络图谱"),
    "site_short": ("nnatlas atlas", "nnatlas 图谱"),
    "intro": ("Every architecture of the seeds, implemented from scratch in PyTorch, drawn from a trace of the "
              "code, measured, verified against the reference implementations, and trained. This site is generated "
              "from the code, so it cannot drift from it.",
              "种子文档中的每一个架构，均用 PyTorch 从零实现，图由代码的追踪自动绘制，经过测量、与参考实现逐一验证并经过训练。"
              "本站由代码生成，因此不会与代码脱节。"),
    "contents": ("Contents", "目录"),
    "compare": ("Comparison", "对比"),
    "search": ("Search names, titles, papers, 中文…", "搜索名称、标题、论文、中文…"),
    "no_match": ("No model matches.", "没有匹配的模型。"),
    "model": ("Model", "模型"),
    "family": ("Family", "家族"),
    "year": ("Year", "年份"),
    "params": ("Parameters", "参数量"),
    "macs": ("MACs", "乘加次数"),
    "task": ("Task", "任务"),
    "verified": ("Verified against", "验证对象"),
    "trained": ("Trained (vs anchor)", "训练结果（对照）"),
    "card": ("Card", "卡片"),
    "paper": ("Paper", "论文"),
    "input": ("Input", "输入"),
    "output": ("Output", "输出"),
    "published_params": ("Published parameters", "公布的参数量"),
    "seed": ("Seed", "种子文档"),
    "seed_errata": ("From the seed, and where it is wrong", "来自种子文档，以及其中的错误"),
    "notes": ("Notes", "说明"),
    "variants": ("Variants", "变体"),
    "differs": ("How it differs", "差异"),
    "diagram": ("Diagram", "结构图"),
    "diagram_hint": ("Click a block box to open its block diagram.", "点击模块方框可打开该模块的结构图。"),
    "blocks": ("Block diagrams", "模块结构图"),
    "block": ("Block", "模块"),
    "summary": ("Layers", "逐层摘要"),
    "layer": ("Layer", "层"),
    "type": ("Type", "类型"),
    "out_shape": ("Output shape", "输出形状"),
    "trainable": ("Trainable", "可训练"),
    "totals": ("Totals", "合计"),
    "source": ("Source", "源代码"),
    "source_of": ("The family's source file", "该家族的源文件"),
    "equations": ("Equations", "公式"),
    "verification": ("Verification", "验证"),
    "check": ("Check", "检查"),
    "status": ("Status", "状态"),
    "detail": ("What was compared", "比较内容"),
    "tolerance": ("Tolerance", "容差"),
    "published_source": ("Source of the published figure", "公布数字的出处"),
    "training": ("Training results", "训练结果"),
    "final_metrics": ("Final metrics", "最终指标"),
    "anchor": ("Published anchor", "公布的对照值"),
    "curves": ("Curves", "训练曲线"),
    "samples": ("Samples", "样例"),
    "run": ("Run", "运行"),
    "no_runs": ("No training run was given to this build.", "本次构建未提供训练运行。"),
    "home": ("Index", "首页"),
    "language": ("中文", "English"),
    "outline": ("The model, outlined", "模型概览"),
    "no_graphviz": ("Graphviz is not installed; the diagram's DOT source follows.", "未安装 Graphviz；下面是结构图的 DOT 源码。"),
    "no_diagram": ("No diagram: ", "无结构图："),
    "line": ("line {n}", "第 {n} 行"),
    "small": ("small", "小尺寸"),
    "pass": ("pass", "通过"),
    "fail": ("fail", "失败"),
    "not checked": ("not checked", "未检查"),
    "computed": ("computed", "计算值"),
    "none": ("none", "无"),
    "reference": ("reference", "参考实现"),
    "contract": ("contract", "前向/反向约定"),
    "not_verified": ("This build did not run the checks for this model.", "本次构建未对该模型运行检查。"),
    "verify_cmd": ("Rerun these checks:", "重新运行这些检查："),
    "footer": ("Generated by nnatlas from its own code.", "由 nnatlas 从其自身代码生成。"),
}


def word(key: str, lang: str) -> str:
    en, zh = CHROME[key]
    return zh if lang == "zh" else en


# Each family's equations: (caption, LaTeX). Captions are short; the LaTeX follows the paper's notation.
EQUATIONS: dict[str, list[tuple[str, str]]] = {
    "linear": [
        ("Linear regression", r"\hat{y} = \mathbf{w}^\top \mathbf{x} + b"),
        ("Logistic regression", r"P(y=1 \mid \mathbf{x}) = \sigma(\mathbf{w}^\top \mathbf{x} + b), "
                                r"\quad \sigma(z) = \frac{1}{1 + e^{-z}}"),
        ("Softmax regression", r"P(y=k \mid \mathbf{x}) = \frac{\exp(\mathbf{w}_k^\top \mathbf{x} + b_k)}"
                               r"{\sum_{j} \exp(\mathbf{w}_j^\top \mathbf{x} + b_j)}"),
    ],
    "mlp": [("A hidden layer", r"\mathbf{h}^{(l)} = \mathrm{ReLU}(W^{(l)} \mathbf{h}^{(l-1)} + \mathbf{b}^{(l)})")],
    "lenet": [("Convolution", r"y_{c,i,j} = b_c + \sum_{k}\sum_{u,v} W_{c,k,u,v}\, x_{k,\, s i + u,\, s j + v}"),
              ("Output size", r"H' = \left\lfloor \frac{H + 2p - k}{s} \right\rfloor + 1")],
    "alexnet": [("Local response normalisation", r"b^i_{x,y} = a^i_{x,y} \Big/ \left(k + \alpha \sum_{j=\max(0, i-n/2)}"
                                                 r"^{\min(N-1, i+n/2)} (a^j_{x,y})^2 \right)^{\beta}"),
                ("ReLU", r"f(x) = \max(0, x)")],
    "vgg": [("Output size of a 3x3 convolution, padding 1", r"H' = H + 2 \cdot 1 - 3 + 1 = H"),
            ("Receptive field of n stacked 3x3 convolutions", r"r = 2n + 1")],
    "nin": [("A 1x1 convolution is a per-pixel linear layer", r"y_{c,i,j} = b_c + \sum_k W_{c,k}\, x_{k,i,j}")],
    "googlenet": [("Inception: four paths concatenated on channels",
                   r"\mathbf{y} = [\,f_{1\times1}(\mathbf{x});\ f_{3\times3}(\mathbf{x});\ f_{5\times5}(\mathbf{x});"
                   r"\ f_{\mathrm{pool}}(\mathbf{x})\,]")],
    "resnet": [("Residual block", r"\mathbf{y} = \mathcal{F}(\mathbf{x}, \{W_i\}) + \mathbf{x}"),
               ("With a projection shortcut", r"\mathbf{y} = \mathcal{F}(\mathbf{x}, \{W_i\}) + W_s \mathbf{x}"),
               ("Batch normalisation", r"\hat{x} = \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}}, \quad "
                                       r"y = \gamma \hat{x} + \beta")],
    "densenet": [("Dense connectivity", r"\mathbf{x}_\ell = H_\ell([\mathbf{x}_0, \mathbf{x}_1, \ldots, "
                                        r"\mathbf{x}_{\ell-1}])"),
                 ("Channels after l layers of growth rate k", r"k_0 + k \cdot (\ell - 1)")],
    "simple_cnn": [("Convolution", r"y_{c,i,j} = b_c + \sum_{k}\sum_{u,v} W_{c,k,u,v}\, x_{k,\, i + u,\, j + v}")],
    "unet": [("Skip connection (concatenation)", r"\mathbf{d}_\ell = \mathrm{DoubleConv}([\,\mathrm{Up}("
                                                 r"\mathbf{d}_{\ell+1});\ \mathbf{e}_\ell\,])"),
             ("Pixel-wise cross entropy", r"E = -\sum_{\mathbf{x} \in \Omega} w(\mathbf{x}) "
                                          r"\log p_{\ell(\mathbf{x})}(\mathbf{x})")],
    "autoencoder": [("Reconstruction", r"\mathcal{L} = \lVert \mathbf{x} - g_\phi(f_\theta(\mathbf{x})) \rVert^2"),
                    ("Reparameterisation (VAE)", r"\mathbf{z} = \boldsymbol{\mu} + \boldsymbol{\sigma} \odot "
                                                 r"\boldsymbol{\epsilon}, \quad \boldsymbol{\epsilon} \sim "
                                                 r"\mathcal{N}(0, I)"),
                    ("VAE's KL term", r"D_{KL} = -\frac{1}{2} \sum_j \left(1 + \log \sigma_j^2 - \mu_j^2 - "
                                      r"\sigma_j^2\right)")],
    "rnn": [("RNN cell", r"\mathbf{h}_t = \tanh(W_{ih} \mathbf{x}_t + \mathbf{b}_{ih} + W_{hh} \mathbf{h}_{t-1} + "
                         r"\mathbf{b}_{hh})"),
            ("LSTM gates", r"\mathbf{i}, \mathbf{f}, \mathbf{g}, \mathbf{o} = \sigma, \sigma, \tanh, \sigma"
                           r"\,(W_{ih} \mathbf{x}_t + W_{hh} \mathbf{h}_{t-1} + \mathbf{b})"),
            ("LSTM state", r"\mathbf{c}_t = \mathbf{f} \odot \mathbf{c}_{t-1} + \mathbf{i} \odot \mathbf{g}, \quad "
                           r"\mathbf{h}_t = \mathbf{o} \odot \tanh(\mathbf{c}_t)"),
            ("GRU", r"\mathbf{n} = \tanh(W_{in} \mathbf{x}_t + \mathbf{r} \odot (W_{hn} \mathbf{h}_{t-1} + "
                    r"\mathbf{b}_{hn})), \quad \mathbf{h}_t = (1 - \mathbf{z}) \odot \mathbf{n} + \mathbf{z} \odot "
                    r"\mathbf{h}_{t-1}")],
    "transformer": [("Scaled dot-product attention", r"\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left("
                                                     r"\frac{Q K^\top}{\sqrt{d_k}}\right) V"),
                    ("Multi-head attention", r"\mathrm{MultiHead}(Q,K,V) = [\mathrm{head}_1; \ldots; "
                                             r"\mathrm{head}_h] W^O"),
                    ("Positional encoding", r"PE_{(pos, 2i)} = \sin(pos / 10000^{2i/d}), \quad PE_{(pos, 2i+1)} = "
                                            r"\cos(pos / 10000^{2i/d})")],
    "bert": [("Scaled dot-product attention", r"\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left("
                                              r"\frac{Q K^\top}{\sqrt{d_k}} + M\right) V"),
             ("Input embedding", r"E = E_{\mathrm{token}} + E_{\mathrm{segment}} + E_{\mathrm{position}}")],
    "gpt": [("Causal attention", r"\mathrm{softmax}\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V, \quad "
                                 r"M_{ij} = -\infty \text{ for } j > i"),
            ("Next-token loss", r"\mathcal{L} = -\sum_t \log P(x_{t+1} \mid x_{\le t})")],
    "vit": [("Patch embedding", r"\mathbf{z}_0 = [\mathbf{x}_{\mathrm{class}}; \mathbf{x}_p^1 E; \ldots; "
                                r"\mathbf{x}_p^N E] + E_{pos}"),
            ("Encoder layer (pre-norm)", r"\mathbf{z}'_\ell = \mathrm{MSA}(\mathrm{LN}(\mathbf{z}_{\ell-1})) + "
                                         r"\mathbf{z}_{\ell-1}, \quad \mathbf{z}_\ell = \mathrm{MLP}(\mathrm{LN}"
                                         r"(\mathbf{z}'_\ell)) + \mathbf{z}'_\ell")],
    "diffusion": [("Forward process", r"q(\mathbf{x}_t \mid \mathbf{x}_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\, "
                                      r"\mathbf{x}_0, (1 - \bar\alpha_t) I)"),
                  ("Training loss", r"\mathcal{L} = \mathbb{E}_{t, \mathbf{x}_0, \boldsymbol{\epsilon}} \lVert "
                                    r"\boldsymbol{\epsilon} - \boldsymbol{\epsilon}_\theta(\sqrt{\bar\alpha_t} "
                                    r"\mathbf{x}_0 + \sqrt{1 - \bar\alpha_t} \boldsymbol{\epsilon}, t) \rVert^2")],
    "mamba": [("Discretisation (eq. 4)", r"\bar{A} = \exp(\Delta A), \quad \bar{B} = (\Delta A)^{-1}"
                                         r"(\exp(\Delta A) - I) \cdot \Delta B"),
              ("Selective scan", r"h_t = \bar{A}_t h_{t-1} + \bar{B}_t x_t, \quad y_t = C_t h_t + D x_t")],
    "gcn": [("Graph convolution", r"H^{(l+1)} = \sigma\left(\tilde{D}^{-\frac{1}{2}} \tilde{A} "
                                  r"\tilde{D}^{-\frac{1}{2}} H^{(l)} W^{(l)}\right), \quad \tilde{A} = A + I")],
    "pointer": [("Attention over input positions", r"u^i_j = v^\top \tanh(W_1 e_j + W_2 d_i), \quad "
                                                   r"p(C_i \mid C_1, \ldots, C_{i-1}, \mathcal{P}) = "
                                                   r"\mathrm{softmax}(u^i)")],
}
