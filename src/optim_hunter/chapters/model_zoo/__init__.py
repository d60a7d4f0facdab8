"""The models chapter: the zoo at a glance, each trained model's run and checks.
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter(
    "model_zoo",
    loads=("*",),  # it lists every model the book uses, so it comes after them all
    reads=("contrasts", "device", "dtype"),  # it loads the pretrained model and shows the contrasts
    estimate=50.0,
)
