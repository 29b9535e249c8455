"""A categorical attention policy: the next glimpse is one of the 28 x 28 pixel centres.

The continuous :class:`~agents.attention.AttentionNetwork` learns where to look from the sampler's
gradient, which only knows the 2 x 2 pixels around the current location. That leaves the policy, not
the core, as the limit: on the pixels the continuous agent reads, a plain MLP does about as well as
on a fixed 5 x 5 grid, and little better than the agent's own core (``experiments/core_capacity.py
--agent``; docs/studies/pixels-vs-core.md).

Here the policy scores every pixel and, in training, chooses with a straight-through Gumbel-softmax
(Concrete) relaxation, as GDFS (Covert et al., ICML 2023) does for its feature choice, so the
gradient reaches each candidate pixel's score through what reading that pixel would add, wherever it
is. Every read is a real pixel, in training as in evaluation.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.checkpoint import SavedPolicy
from envs.data import IMAGE_SIZE
from envs.episode import NUM_PIXELS, Candidates
from envs.sampler import pixel_centres, pixel_to_action

#: What a ``memory="pixels"`` policy scores from besides the summary: the record of the episode's
#: reads, ``(mask (B, 784), pixels (B, 784))`` (:meth:`envs.episode.EpisodeState.record_observation`).
Record = tuple[torch.Tensor, torch.Tensor]
#: What a :class:`PixelAttention` remembers of its episode besides the observation.
MEMORIES = ("none", "pixels")
#: How a :class:`PixelAttention` explores in training (:meth:`PixelAttention.read`).
EXPLORATIONS = ("gumbel", "epsilon")


class PixelAttention(SavedPolicy, nn.Module):
    """``scores_t = MLP(concat(histogram_t, prediction_t)) + beta_t``: ``(B, H + 10) -> (B, 784)``.

    * **Acting** (``forward``, eval mode, the environment): the highest-scoring pixel's centre,
      ``action = pixel_to_action(centre[argmax scores_t])``, ``(B, 2)`` in ``[-1, 1]``.
    * **Training** (:meth:`candidate_pixels` in train mode): a straight-through Gumbel-softmax choice whose
      relaxation mixes what ``K`` candidate pixels would add to the histogram (see :meth:`candidate_pixels`).
      Mixing the candidates' *increments*, not their locations and values, matters: a glimpse at the
      mean location with the mean grey level is no pixel at all, and a relaxation that mixes
      locations and values collapses onto a few distinct pixels (docs/studies/choosing-pixels.md).

    ``beta_t`` (``(T, 784)``, zeros at first) is a learned per-glimpse score: the policy can be a fixed
    sequence plus an adaptive correction, as :class:`~agents.attention.AttentionNetwork`'s offsets.

    :param observation_size: ``H + 10``.
    :param max_glimpses: ``T``.
    :param hidden: width of the two hidden layers.
    :param temperature: ``tau`` of the training relaxation (> 0).
    :param candidates: ``K``, pixels whose increments the training relaxation mixes (>= 1).
    :param memory: ``"none"``: scores from the observation alone. ``"pixels"``: the policy also sees
        the pixels read so far in the episode as the masked image ``(mask, mask * image)``
        (``(B, 2 * 784)``, detached: a record, not a path for gradients), fed to the MLP beside the
        observation, and never reads a pixel twice, as GDFS's selector does. It reads them from the
        record observation that the episode state carries
        (:meth:`envs.episode.EpisodeState.record_observation`: what :func:`agents.rollout.run_episodes`
        passes it, and the environment's ``obs_type="record"``); on the default observation such a
        policy cannot act (:meth:`choose` refuses). Its results: docs/studies/pixel-memory.md.
    :param exploration: how :meth:`candidate_pixels` chooses in training. ``"gumbel"``: the relaxed choice among
        ``K`` candidates above, whose weights learn from what each candidate would add. ``"epsilon"``:
        one pixel, the best-scoring one or, with probability :attr:`noise`, one drawn uniformly
        (among the unread ones with ``memory="pixels"``), no relaxation: the scores are then a value
        head trained by regression (``attention_target="value"`` of
        :class:`~agents.differentiable.DualOptimizerTrainer`, as DIME, Gadgil et al., ICLR 2024).
    """

    def __init__(
        self,
        observation_size: int,
        max_glimpses: int,
        hidden: int = 128,
        temperature: float = 1.0,
        candidates: int = 16,
        memory: str = "none",
        exploration: str = "gumbel",
    ) -> None:
        super().__init__()
        if max_glimpses < 1:
            raise ValueError(f"PixelAttention needs the number of glimpses T >= 1, got {max_glimpses}.")
        if not temperature > 0:
            raise ValueError(f"PixelAttention temperature must be > 0, got {temperature}.")
        self.observation_size = observation_size
        self.max_glimpses = max_glimpses
        self.hidden = hidden
        self.temperature = float(temperature)
        if candidates < 1:
            raise ValueError(f"PixelAttention needs candidates >= 1, got {candidates}.")
        self.candidates = candidates
        if memory not in MEMORIES:
            raise ValueError(f"Unknown PixelAttention memory {memory!r}; valid values are {list(MEMORIES)}.")
        self.memory = memory
        if exploration not in EXPLORATIONS:
            raise ValueError(
                f"Unknown PixelAttention exploration {exploration!r}; valid values are {list(EXPLORATIONS)}."
            )
        self.exploration = exploration
        #: How much the training choice explores: the scale of the Gumbel noise (1 samples from
        #: ``softmax(scores)``) or, with ``exploration="epsilon"``, the probability of a uniform pixel;
        #: towards 0 the training choice approaches the argmax that acting takes (``train/differentiable.py``
        #: anneals it).
        self.noise = 1.0
        self.beta = nn.Parameter(torch.zeros(max_glimpses, NUM_PIXELS))
        self.net = nn.Sequential(
            nn.Linear(observation_size + (2 * NUM_PIXELS if memory == "pixels" else 0), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, NUM_PIXELS),
        )
        nn.init.normal_(self.net[-1].weight, std=0.01)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("centres", pixel_centres(), persistent=False)

    checkpoint_kind = "pixel-attention"

    @property
    def reads_record(self) -> bool:
        """Whether the policy scores from the record of reads (``memory="pixels"``): it then acts on the
        record observation (:class:`~agents.rollout.PixelReader`)."""
        return self.memory == "pixels"

    def checkpoint_config(self) -> dict:
        """The constructor's arguments, for checkpoints."""
        return {
            "observation_size": self.observation_size,
            "glimpses": self.max_glimpses,
            "hidden": self.hidden,
            "temperature": self.temperature,
            "candidates": self.candidates,
            "memory": self.memory,
            "exploration": self.exploration,
        }

    def scores(self, observation: torch.Tensor | dict[str, torch.Tensor], step: int | torch.Tensor) -> torch.Tensor:
        """Unnormalised log-probabilities of the 784 pixels (row-major), ``(B, 784)``.

        :param observation: ``(B, H + 10)``, or the record observation (a dict whose ``summary`` is
            that, ``mask`` and ``pixels`` the record of reads:
            :meth:`envs.episode.EpisodeState.record_observation`, the environment's ``obs_type="record"``).
            ``memory="pixels"`` needs the record, and gives the pixels already read the lowest score;
            ``memory="none"`` ignores it.
        :param step: the glimpse ``t`` being chosen, one for the batch or ``(B,)`` integers, one per row
            (a PPO minibatch mixes the steps of its episodes).
        """
        record = None
        if isinstance(observation, dict):
            observation, record = observation["summary"], (observation["mask"], observation["pixels"])
        if observation.shape[-1] != self.observation_size:
            raise ValueError(
                f"PixelAttention expects observations of size {self.observation_size}, got {observation.shape[-1]}: "
                "was it built for another perception core?"
            )
        last = int(step.max()) if isinstance(step, torch.Tensor) else step
        if last >= self.max_glimpses:
            raise IndexError(
                f"PixelAttention has per-glimpse scores for {self.max_glimpses} glimpses; step {last} is past them."
            )
        if self.memory == "none":
            return self.net(observation) + self.beta[step]
        if record is None:
            raise ValueError(
                "PixelAttention(memory='pixels') scores from the record of the episode's reads: pass the record "
                "observation (a dict with summary, mask and pixels: envs.episode.EpisodeState.record_observation, "
                "or an environment made with obs_type='record'); agents.rollout.run_episodes passes it."
            )
        mask, seen = record
        scores = self.net(torch.cat([observation, mask, seen], dim=-1)) + self.beta[step]
        return scores.masked_fill(mask > 0, torch.finfo(scores.dtype).min)  # never the same pixel twice

    def forward(self, observation: torch.Tensor | dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The highest-scoring pixel's centre as an action, ``(B, 2)`` in ``[-1, 1]``."""
        return pixel_to_action(self.centres[self.choose(observation, step)])

    def choose(self, observation: torch.Tensor | dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The highest-scoring pixel, ``(B,)`` indices ``i * 28 + j``: the action of an environment made
        with ``action_type="pixel"``. A ``memory="pixels"`` policy reads the pixels it read from the
        record observation, so that environment needs ``obs_type="record"`` too."""
        if self.memory != "none" and not isinstance(observation, dict):
            raise RuntimeError(
                "PixelAttention(memory='pixels') needs the grey levels it read: make the environment with "
                "obs_type='record' (and action_type='pixel'), or run it with agents.rollout.run_episodes."
            )
        return self.scores(observation, step).argmax(dim=-1)

    def candidate_pixels(self, observation: torch.Tensor | dict[str, torch.Tensor], step: int) -> Candidates:
        """Choose pixels for :func:`envs.episode.step` to read: ``Candidates(pixels (B, K), weights (B, K))``.

        Candidate ``k`` is pixel ``pixels[:, k]``; the core's histogram moves by the ``weights``-mixture
        of the candidates' increments (straight-through, :func:`envs.episode.step`). ``observation``:
        as in :meth:`scores`.

        * Eval mode: ``K = 1``, the best pixel (:meth:`forward`), weight 1.
        * Train mode with ``exploration="epsilon"``: ``K = 1``, the best pixel or, with probability
          :attr:`noise`, a uniform one (unread, with a memory), weight 1.
        * Train mode: ``K = candidates``, the top-``K`` pixels of ``scores + noise * g`` (``g ~ Gumbel(0, 1)``;
          the first is the sampled choice), ``weights = softmax((scores + g)[top K] / tau)``. The
          rollout takes the first candidate's glimpse, with the gradient of the weights-mixture of
          all ``K`` increments, so each candidate's score learns from what reading that pixel would
          have added.
        """
        scores = self.scores(observation, step)
        if not self.training or self.exploration == "epsilon":
            chosen = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
            if self.training:  # epsilon-greedy: a uniform pixel (never one already read) with probability noise
                uniform = torch.rand_like(scores).masked_fill(scores == torch.finfo(scores.dtype).min, -1.0)
                explore = torch.rand(scores.shape[0], 1, device=scores.device) < self.noise
                chosen = torch.where(explore, uniform.argmax(dim=-1, keepdim=True), chosen)
            weights = torch.ones(chosen.shape, device=scores.device)
        else:
            gumbel = -torch.empty_like(scores).exponential_().log()  # -log Exp(1) ~ Gumbel(0, 1), as F.gumbel_softmax
            perturbed, chosen = (scores + self.noise * gumbel).topk(
                min(self.candidates, NUM_PIXELS), dim=-1
            )  # best first
            weights = torch.softmax(perturbed / self.temperature, dim=-1)
        return Candidates(chosen, weights)

    def chosen_scores(
        self, observations: torch.Tensor, coords: torch.Tensor, records: Record | None = None
    ) -> torch.Tensor:
        """The scores of the pixels an episode read, ``(T, B)``, with gradient to the policy's parameters:
        what a value head (``exploration="epsilon"``) predicted for each glimpse it took.

        :param observations: ``(T, B, H + 10)`` what each glimpse was chosen from.
        :param coords: ``(T, B, 2)`` the pixels read, in pixel units (centres).
        :param records: ``(mask (T, B, 784), pixels (T, B, 784))``, the record each glimpse was chosen
            from (:attr:`agents.rollout.Episode.records`); ``memory="pixels"`` needs it.
        """
        flat = _pixel_index(coords.transpose(0, 1))  # (B, T)

        def seen(t: int) -> torch.Tensor | dict[str, torch.Tensor]:
            if records is None:
                return observations[t]
            return {"summary": observations[t], "mask": records[0][t], "pixels": records[1][t]}

        return torch.stack(
            [self.scores(seen(t), t).gather(1, flat[:, t : t + 1])[:, 0] for t in range(observations.shape[0])]
        )

    def repeat_probability(self, observations: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """How likely the policy is to look again where it already looked: the mean over glimpses
        ``t`` and images of ``sum_{s < t} softmax(scores_t)[p_s]``, a scalar with gradient to the
        policy's parameters only.

        The observation (histogram + prediction) does not say which pixels were read, so nothing
        stops a policy that scores one pixel highest from reading it again and again (a glimpse
        that reads no new pixel). GDFS masks the pixels already chosen; here the policy must learn
        it, and this term is its training signal (``DualOptimizerTrainer(repeat_penalty=...)``, the
        preset ``ablation-repeat-penalty`` of ``train/differentiable.py``). It stops most repeats but
        lowers accuracy at 25 glimpses (docs/studies/choosing-pixels.md), so it is off by default;
        ``memory="pixels"`` rules repeats out instead.

        :param observations: ``(T, B, H + 10)`` what each glimpse was chosen from (an episode's).
        :param coords: ``(T, B, 2)`` the pixels chosen, in pixel units (centres).
        """
        if self.memory != "none":
            raise ValueError(
                "PixelAttention(memory='pixels') never reads a pixel twice; the repeat penalty is for memory='none'."
            )
        steps = observations.shape[0]
        probabilities = torch.stack([torch.softmax(self.scores(observations[t], t), dim=-1) for t in range(steps)])
        flat = _pixel_index(coords).T  # (B, T)
        previous = probabilities.gather(-1, flat.unsqueeze(0).expand(steps, -1, -1))  # (T, B, T): P_t(p_s)
        earlier = torch.ones(steps, steps, device=coords.device).tril(-1).unsqueeze(1)  # s < t
        return (previous * earlier).sum(dim=-1).mean()


def _pixel_index(coords: torch.Tensor) -> torch.Tensor:
    """Row-major index ``i * 28 + j`` (int64) of the pixel centres ``coords`` ``(..., 2)`` (pixel units)."""
    index = coords.round().long()
    return index[..., 0] * IMAGE_SIZE + index[..., 1]
