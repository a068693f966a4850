"""The rollout as a LangGraph state machine.

    START ─┬─(seeker spoke last)────► supporter ─┬─► user_simulator ─► critic ─┬─ goal reached ─► END
           └─(supporter spoke last)─► user_simulator │                          ├─ turn == T ────► END
                                                     └─ no usable reply ─► END  └─ else ─► supporter

One graph serves both uses: an evaluation episode starts from the seeker's situation (the
supporter speaks first); a simulated future starts right after a candidate supporter reply
(the user simulator speaks first). A turn is one user-simulator reply plus its critic score. A supporter that gives no usable reply
after its regenerations (e.g. a think-format policy cut off by max_tokens) ends the episode as a
failure (`no_reply`): that is the supporter's outcome, counted in SR and AT like any other.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from esc_agents.core.types import Case, CriticScore, Message, Trajectory
from esc_agents.roles.llm import Critic, EmptyReplyError, Supporter, UserSimulator


class EpisodeState(TypedDict):
    messages: Annotated[list[Message], operator.add]
    scores: Annotated[list[CriticScore], operator.add]
    turn: int
    status: Literal["running", "success", "max_turns", "no_reply"]


@dataclass
class EpisodeContext:
    case: Case
    supporter: Supporter
    user_simulator: UserSimulator
    critic: Critic
    max_turns: int
    critic_samples: int
    success_threshold: float


async def supporter(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict:
    ctx = runtime.context
    try:
        return {"messages": [await ctx.supporter.reply(ctx.case, state["messages"])]}
    except EmptyReplyError:
        return {"status": "no_reply"}


async def user_simulator(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict:
    ctx = runtime.context
    return {"messages": [await ctx.user_simulator.reply(ctx.case, state["messages"])]}


async def critic(state: EpisodeState, runtime: Runtime[EpisodeContext]) -> dict:
    ctx = runtime.context
    score = await ctx.critic.judge(ctx.case, state["messages"], ctx.critic_samples)
    turn = state["turn"] + 1
    if goal_reached(score, ctx.success_threshold):
        status = "success"
    elif turn >= ctx.max_turns:
        status = "max_turns"
    else:
        status = "running"
    return {"scores": [score], "turn": turn, "status": status}


def goal_reached(score: CriticScore, threshold: float) -> bool:
    return score.mean is not None and score.mean > threshold


def who_speaks_first(state: EpisodeState) -> str:
    last = state["messages"][-1].speaker if state["messages"] else "seeker"
    return "future" if last == "supporter" else "episode"


def after_supporter(state: EpisodeState) -> str:
    return "finished" if state["status"] == "no_reply" else "replied"


def after_critic(state: EpisodeState) -> str:
    """`finished` once the critic node set the status to success (goal) or max_turns (cap)."""
    return "next_turn" if state["status"] == "running" else "finished"


def build_episode_graph():
    graph = StateGraph(EpisodeState, context_schema=EpisodeContext)
    graph.add_node("supporter", supporter)
    graph.add_node("user_simulator", user_simulator)
    graph.add_node("critic", critic)
    graph.add_conditional_edges(START, who_speaks_first, {"episode": "supporter", "future": "user_simulator"})
    graph.add_conditional_edges("supporter", after_supporter, {"replied": "user_simulator", "finished": END})
    graph.add_edge("user_simulator", "critic")
    graph.add_conditional_edges(
        "critic", after_critic, {"finished": END, "next_turn": "supporter"}
    )
    return graph.compile()


EPISODE_GRAPH = build_episode_graph()


async def run_episode(ctx: EpisodeContext, history: list[Message] | None = None) -> Trajectory:
    """Run one episode (or, given a history ending with a supporter turn, one future)."""
    start = history if history is not None else [Message(speaker="seeker", content=ctx.case.situation)]
    # Each turn visits at most three nodes; the limit only guards against a routing bug.
    final = await EPISODE_GRAPH.ainvoke(
        {"messages": list(start), "scores": [], "turn": 0, "status": "running"},
        context=ctx,
        config={"recursion_limit": 3 * ctx.max_turns + 5},
    )
    last_score = final["scores"][-1].mean if final["scores"] else None
    return Trajectory(
        case_id=ctx.case.id,
        emotion=ctx.case.emotion,
        problem=ctx.case.problem,
        messages=final["messages"],
        scores=final["scores"],
        turns=final["turn"],
        success=final["status"] == "success",
        final_score=last_score,
        status=final["status"],
    )
