"""The report figures' matplotlib style and panel limit (shared by every figure writer)."""

MAX_PANELS = 6


def style():
    """matplotlib.pyplot (Agg backend) with the report's figure style set."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "text.usetex": False,
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "legend.frameon": False,
            "legend.fontsize": 8,
            "figure.dpi": 110,
            "savefig.bbox": "tight",
        }
    )
    return plt
