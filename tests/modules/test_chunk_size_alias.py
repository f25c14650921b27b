"""``chunk_size`` is the name of the chunk size h; ``horizon`` stays a deprecated alias for a release."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from tensordict import TensorDict
from torchrl.modules.vla import TinyVLA

from _loss_helpers import EMBED, make_backbone
from torchrl_chunk._deprecation import REMOVED_IN, renamed_attribute, renamed_kwarg
from torchrl_chunk.modules import (
    ChunkGaussianHead, VLAChunkScale, chunk_head, make_chunk_actor_critic, make_mlp_actor_critic,
    make_pixel_actor_critic, make_vla_actor_critic)
from torchrl_chunk.modules.vla import vla_chunk_scale

OLD_KEYWORD = r"`horizon=` is deprecated, use `chunk_size=`; it will be removed in " + REMOVED_IN
OLD_ATTRIBUTE = r"`\.horizon` is deprecated, use `\.chunk_size`"


# -- the helper --------------------------------------------------------------------------
@renamed_kwarg("horizon", "chunk_size")
def positional(a, chunk_size, b=0):
    return a, chunk_size, b


@renamed_kwarg("horizon", "chunk_size")
def keyword_only(*, chunk_size=4):
    return chunk_size


class Holder:
    horizon = renamed_attribute("horizon", "chunk_size")

    @renamed_kwarg("horizon", "chunk_size")
    def __init__(self, chunk_size):
        self.chunk_size = chunk_size


def test_the_old_keyword_is_passed_on_as_the_new_one_with_a_warning_at_the_caller():
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD) as record:
        assert positional(1, horizon=2, b=3) == (1, 2, 3)
    assert record[0].filename == __file__  # stacklevel: the line that passed horizon=
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        assert keyword_only(horizon=7) == 7
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        assert Holder(horizon=3).chunk_size == 3


def test_the_new_names_do_not_warn_and_positions_are_kept():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert positional(1, 2) == positional(1, chunk_size=2) == (1, 2, 0)
        assert keyword_only() == 4 and keyword_only(chunk_size=5) == 5
    assert list(inspect.signature(positional).parameters) == ["a", "chunk_size", "b"]


@pytest.mark.parametrize("call", [
    lambda: positional(1, chunk_size=2, horizon=2),
    lambda: positional(1, 2, horizon=2),  # chunk_size by position
    lambda: keyword_only(chunk_size=2, horizon=2),
    lambda: Holder(2, horizon=2),
])
def test_both_names_at_once_are_refused_naming_both(call):
    with pytest.raises(TypeError, match=r"got both `horizon=` \(deprecated\) and `chunk_size=`"):
        call()


def test_the_old_attribute_warns_and_cannot_be_set():
    holder = Holder(3)
    with pytest.warns(DeprecationWarning, match=OLD_ATTRIBUTE):
        assert holder.horizon == 3
    with pytest.raises(AttributeError):
        holder.horizon = 4


def test_renaming_to_a_parameter_the_function_lacks_fails_at_definition():
    with pytest.raises(TypeError, match="no parameter 'chunk_size'"):
        renamed_kwarg("horizon", "chunk_size")(lambda horizon: horizon)


# -- the modules -------------------------------------------------------------------------
def vla_actor(**size):
    torch.manual_seed(0)
    vla = TinyVLA(action_dim=4, chunk_size=3, hidden_dim=16, text_dim=8)
    example = TensorDict({("observation", "image"): torch.zeros(2, 16, 16, 3, dtype=torch.uint8),
                          ("observation", "state"): torch.zeros(2, 39),
                          ("observation", "task_id"): torch.zeros(2, 1, dtype=torch.long)}, [2])
    return make_vla_actor_critic(vla, action_dim=4, instructions=["reach"], example=example, **size)[0]


BUILDERS = {
    "make_chunk_actor_critic": lambda **size: make_chunk_actor_critic(make_backbone(), EMBED, action_dim=2, **size)[0],
    "make_mlp_actor_critic": lambda **size: make_mlp_actor_critic(torch.zeros(39), torch.ones(39), hidden=(8,), **size)[0],
    "make_pixel_actor_critic": lambda **size: make_pixel_actor_critic(channels=8, embed_dim=8, **size)[0],
    "make_vla_actor_critic": vla_actor,
}
HEADS = {"make_vla_actor_critic": vla_chunk_scale}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_builder_takes_chunk_size_and_still_the_old_keyword(name):
    build, head_of = BUILDERS[name], HEADS.get(name, chunk_head)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert head_of(build(chunk_size=3)).chunk_size == 3
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        head = head_of(build(horizon=3))
    assert head.chunk_size == 3 and head.log_std.shape[0] == 3
    with pytest.raises(TypeError, match="both"):
        build(horizon=3, chunk_size=3)
    with pytest.warns(DeprecationWarning, match=OLD_ATTRIBUTE):
        assert head.horizon == 3


@pytest.mark.parametrize("head_class,args", [(ChunkGaussianHead, (EMBED,)), (VLAChunkScale, ())])
def test_the_chunk_heads_take_chunk_size_by_position_or_name(head_class, args):
    assert head_class(*args, 3, 2).chunk_size == head_class(*args, chunk_size=3, action_dim=2).chunk_size == 3
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        assert head_class(*args, horizon=3, action_dim=2).log_std.shape == (3, 2)
    with pytest.raises(TypeError, match="both"):
        head_class(*args, 3, 2, horizon=3)
