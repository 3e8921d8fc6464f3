"""Writes the cloze test corpora in this folder: invented facts nobody tuned for (issue #15).

    python bench/corpora/make.py        # rewrites <name>.txt and <name>.prompts.txt

Five topics, 15 to 400 lines. Every fact is stated 3-6 times in different words, mixed with
numbers and Latin letters; names are invented and chosen so that jieba splits them oddly
(万俟小禾, 栗子坡, 雾凇岭 ...). The prompts ask for the facts in words that no corpus line
uses. Deterministic (seeded), so the files only change when this script does.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# relation -> (statements about s and o, prompts as (template, which side is masked))
RELATIONS = {
    "job": (
        [
            "{s}是{place}的一名{o}。",
            "{s}在{place}当{o}已经{n}年了。",
            "说起{place}的{o}，大家都会想到{s}。",
            "{s}从{y}年起就做{o}这一行。",
            "{place}的人都知道{s}是个好{o}。",
            "{s}每天早上七点开始干{o}的活儿。",
        ],
        [("要找{place}最好的{o}，就去问[S]。", "s"), ("{s}干的是[O]这份工作。", "o")],
    ),
    "home": (
        [
            "{s}的老家在{o}。",
            "{s}是在{o}长大的。",
            "{s}每年春节都回{o}过年。",
            "从{o}走出来的{s}，后来去了{place}。",
            "{s}常说{o}的山水最好看。",
            "{o}的乡亲们都认识{s}。",
        ],
        [("{s}出生的地方叫[O]。", "o"), ("{o}出了个有名的人，名叫[S]。", "s")],
    ),
    "made": (
        [
            "{s}生产一种叫{o}的{thing}。",
            "{o}是{s}卖得最好的{thing}。",
            "{s}的{o}型号是{code}。",
            "很多人买{s}的{o}当礼物。",
            "{o}这款{thing}出自{s}。",
            "{s}在{y}年推出了{o}。",
        ],
        [("{thing}[O]是哪家做的？是{s}。", "o"), ("{o}的生产商是[S]。", "s")],
    ),
    "likes": (
        [
            "{s}最喜欢的食物是{o}。",
            "{s}每顿饭都离不开{o}。",
            "{s}说世界上最好吃的就是{o}。",
            "朋友请{s}吃饭，总会点一盘{o}。",
            "{s}的冰箱里放满了{o}。",
        ],
        [("{s}最爱吃[O]。", "o"), ("{o}是[S]的最爱。", "s")],
    ),
    "pet": (
        [
            "{s}养了一只叫{o}的{animal}。",
            "{o}是{s}家的{animal}，今年{n}岁。",
            "{s}每天傍晚带{o}去散步。",
            "邻居们常看见{o}跟在{s}后面。",
            "{s}给{animal}取名{o}。",
        ],
        [("{s}的{animal}名叫[O]。", "o"), ("{animal}{o}的主人是[S]。", "s")],
    ),
    "found": (
        [
            "{s}是{o}的创始人。",
            "{o}是{s}在{y}年创办的。",
            "{s}一手建立了{o}。",
            "没有{s}，就没有今天的{o}。",
            "{o}的第一任负责人就是{s}。",
            "{s}创办{o}时只有{n}个人。",
        ],
        [("创办{o}的人叫[S]。", "s"), ("{s}建立的机构叫[O]。", "o")],
    ),
    "color": (
        [
            "{s}的翅膀是{o}色的。",
            "{s}全身长着{o}色的羽毛。",
            "远远看去，{s}是一团{o}色。",
            "{s}因为颜色{o}而出名。",
            "画家画{s}时总用{o}色颜料。",
        ],
        [("{s}的颜色是[O]色。", "o"), ("那种{o}色的鸟叫[S]。", "s")],
    ),
}

PEOPLE = [
    "万俟小禾",
    "岑默言",
    "欧阳朵朵",
    "南宫铁蛋",
    "司空晓月",
    "柯一苇",
    "乌兰图雅",
    "阮七七",
    "冼星河",
    "覃木子",
    "钟离果果",
    "闻人素素",
    "佘山青",
    "尉迟大勇",
    "皇甫蓉蓉",
    "巫马小满",
    "澹台青衫",
    "左丘明月",
    "濮阳小树",
    "公孙橘子",
    "宇文豆豆",
    "呼延春生",
    "亓官秋水",
    "鲜于米粒",
    "赫连晴川",
    "东方小葵",
    "慕容阿土",
    "令狐糖糖",
    "上官石头",
    "诸葛小雨",
]
PLACES = [
    "栗子坡",
    "雾凇岭",
    "青苔湾",
    "桦树屯",
    "白鹭洲",
    "松果镇",
    "云杉谷",
    "芦花荡",
    "琥珀村",
    "石榴坪",
    "银杏口",
    "鹿鸣滩",
    "雪莲沟",
    "竹影寨",
    "杏花溪",
    "枫叶渡",
]
JOBS = ["铁匠", "木匠", "裁缝", "厨师", "邮递员", "理发师", "渔夫", "药剂师", "钟表匠", "陶艺师", "花匠", "鞋匠"]
FOODS = ["糖醋藕", "酸辣粉", "桂花糕", "炸酱面", "酒酿圆子", "葱油饼", "韭菜盒子", "腌笃鲜", "豆腐脑", "红豆饼"]
COMPANIES = ["晨曦科技", "蓝鲸工坊", "松鼠电器", "飞鱼文具", "萤火照明", "北斗玩具", "橙子家居", "雪豹户外"]
PRODUCTS = ["星尘", "微光", "青鸟", "晓风", "云朵", "琉璃", "松涛", "疾风", "海螺", "银河"]
THINGS = ["台灯", "背包", "钢笔", "闹钟", "风扇", "音箱", "水壶", "帐篷"]
ANIMALS = ["猫", "狗", "兔子", "鹦鹉", "乌龟", "刺猬"]
PETS = ["团子", "可乐", "芝麻", "布丁", "雪球", "豆包", "饭团", "年糕"]
ORGS = ["星火图书馆", "晨光合唱团", "远山义诊队", "小橘灯学堂", "蒲公英剧社", "青藤书院", "灯塔救援队", "木棉基金会"]
BIRDS = ["雾凇雀", "琉璃鸫", "栗头翁", "青鸾莺", "火尾鹟", "月光鹭", "松针鹛", "芦苇鸮"]
COLORS = ["蓝", "红", "金", "紫", "绿", "白", "黑", "橙"]

TOPICS = {  # name -> (lines wanted, relations used, seed)
    "town15": (15, ["job", "home"], 1),
    "shop30": (30, ["made", "job"], 2),
    "friends60": (60, ["likes", "pet", "home"], 3),
    "island150": (150, ["color", "pet", "job", "home"], 4),
    "history400": (400, ["found", "job", "home", "likes", "made", "pet", "color"], 5),
}


def facts_for(relation: str, rng: random.Random, used: set) -> tuple[str, str, dict]:
    """One fact; a person may have a job, a home, a pet ... but one of each (`used` holds (relation, name))."""
    pick = lambda pool: next(x for x in rng.sample(pool, len(pool)) if (relation, x) not in used)  # noqa: E731
    extra = {
        "place": rng.choice(PLACES),
        "n": rng.randint(2, 30),
        "y": rng.randint(1980, 2024),
        "code": f"{rng.choice('XKQZ')}{rng.randint(2, 99)}",
        "thing": rng.choice(THINGS),
        "animal": rng.choice(ANIMALS),
    }
    if relation == "job":
        s, o = pick(PEOPLE), rng.choice(JOBS)
    elif relation == "home":
        s, o = pick(PEOPLE), rng.choice(PLACES)
    elif relation == "made":
        s, o = pick(COMPANIES), pick(PRODUCTS)
    elif relation == "likes":
        s, o = pick(PEOPLE), rng.choice(FOODS)
    elif relation == "pet":
        s, o = pick(PEOPLE), pick(PETS)
    elif relation == "found":
        s, o = pick(PEOPLE), pick(ORGS)
    else:
        s, o = pick(BIRDS), rng.choice(COLORS)
    used.update({(relation, s), (relation, o)})
    return s, o, extra


def build(lines_wanted: int, relations: list[str], seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    lines, prompts, used = [], [], set()
    for _ in range(10_000):
        if len(lines) >= lines_wanted:
            break
        relation = (
            relations[len(prompts) // 2 % len(relations)]
            if len(prompts) // 2 < len(relations)
            else rng.choice(relations)
        )
        try:
            s, o, extra = facts_for(relation, rng, used)
        except StopIteration:  # a pool ran out: use another relation
            continue
        statements, asks = RELATIONS[relation]
        k = min(rng.randint(3, 6), len(statements), lines_wanted - len(lines))
        if k < 2:  # a fact stated once cannot be probed in other words: pad with another statement of an earlier fact
            k = 2
        lines += [t.format(s=s, o=o, **extra) for t in rng.sample(statements, k)]
        for template, side in asks:
            answer = s if side == "s" else o
            text = template.format(s=s, o=o, **extra).replace("[S]" if side == "s" else "[O]", "[MASK]" * len(answer))
            prompts.append(f"{text}\t{answer}")
    rng.shuffle(lines)
    return lines[:lines_wanted], prompts


def main() -> None:
    for name, (n, relations, seed) in TOPICS.items():
        lines, prompts = build(n, relations, seed)
        (HERE / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (HERE / f"{name}.prompts.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8")
        print(f"{name}: {len(lines)} lines, {len(prompts)} prompts")


if __name__ == "__main__":
    main()
