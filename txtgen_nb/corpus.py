"""Procedural children's stories from a weighted grammar, and a recogniser for the same grammar.

One grammar drives both directions. ``RULES`` maps a nonterminal to weighted expansions written
as space-separated symbols:

* ``UPPER_CASE`` names another nonterminal;
* ``@class`` is a word from a lexicon in ``LEXICON``;
* ``$X`` / ``$X.attr`` is a story binding (the hero ``$H``, friend ``$F``, parent ``$P``, the
  story's ``$THING``, ``$PLACE``, ``$ANIMAL``, ``$FOOD``) with attributes ``kind``, ``sub``
  (he/she/they), ``obj``, ``pos`` and ``be`` ("she was", "they were");
* ``A`` is the article "a" or "an", chosen by the next word;
* anything else is a literal word or punctuation mark.

A story is a *shape* (a sequence of sentence nonterminals from ``STORY_SHAPES``) expanded with one
cast, so names, pronouns and objects stay consistent across the story. For recognition each
binding is widened to its word class (``$H.sub`` to he/she/they), so ``is_grammatical`` is a
context-free check of one sentence, done by a memoised top-down parser with first-word indexing.

The same grammar is also a *prefix oracle*: ``valid_next_tokens`` gives the tokens that keep a text the
start of some grammatical story (an incremental Earley parser, one chart per word, cached), the ground
truth a sampler's cutoff can be judged against at every step.

Usage::

    stories = generate_stories(100, seed=0)
    is_grammatical('"Can we play?" asked Lily.')        # True
    grammatical_rate(stories)                           # 1.0
    valid_next_tokens(tok, "Once upon a time")          # {id of ','}
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import re
from functools import lru_cache
from typing import Iterable, Sequence

# --------------------------------------------------------------------------------------------
# Lexicons (space-separated word lists)
# --------------------------------------------------------------------------------------------

_GIRL_NAMES = """Lily Emma Mia Ava Sophie Lucy Anna Ella Grace Chloe Zoe Ruby Rosie Daisy Molly Amy Sara
Kate Jane Ellie Maya Nora Ivy Hazel Luna Stella Alice Clara Emily Hannah Olivia Isla Poppy Holly Julia
Leah Lola Maisie Millie Nina Olive Penny Rose Sadie Tessa Violet Willow Bella Cora Dora Eva Fiona Gemma
Heidi Iris Jade Kira Lara Mila Nell Paige Rita Sally Tara Uma Vera Wendy Yara Zara Abby Beth Cindy Dana
Erin Faye Gina Hope Ingrid Jenny Katie Laura Mary Nancy Opal Pearl Rachel Sophia Tina Vicky Amber April
Becky Carla Dina Elsa Flora Greta Hattie Irene Josie Kelly Lena Megan Nadia Pia Rosa Sylvie Tilly Wanda
Yasmin Zelda Ada Bonnie Celia Delia Edith Freya Gwen Helen Ida Joy June Kim Lisa Mabel Naomi Phoebe Rhea
Susie Thea Belle Carmen Diana Esme Fern Gloria Harriet Lottie Marta Noor Priya Rina Selma Alma Bree Cleo
Frida Gia Jill Kaya Lana Mira Nia Peg Tilda Maggie Winnie Elsie Matilda Edna Agnes Pippa"""
_BOY_NAMES = """Tom Ben Max Jack Leo Oliver Jake Tim Lucas Noah Ethan Liam Owen Finn Henry Oscar Theo Jacob
Luke Adam Dan Eli Felix George Harry Isaac James Kevin Louis Mark Nick Paul Ryan Simon Toby Victor Will
Zack Alfie Arthur Billy Bobby Dylan Eddie Frank Gus Hugo Ian Joe Kyle Lenny Milo Ned Otto Pete Ralph Sid
Ted Vince Walter Xavier Yusuf Zane Abe Bart Carl Dave Evan Fred Glen Hank Ivan Jim Karl Lars Matt Nate
Oren Percy Rex Seth Tony Wes Aaron Brian Colin Derek Elliot Floyd Grant Hector Jonah Kurt Lewis Miles
Neil Omar Patrick Reed Scott Troy Wade Aldo Bruno Cody Dean Emil Gabe Harvey Jasper Lionel Marco Nico
Ollie Pablo Roger Stan Tyler Wyatt Axel Boris Caleb Dex Ernie Fritz Gil Hal Igor Jay Ken Lou Moe Norm
Phil Rudy Sean Tobias Vern Ward Yuri Archie Barney Cyril Duncan Eric Freddie Gordon Howard Jonas Ronan"""
_KID_NAMES = """Sam Alex Charlie Jordan Taylor Riley Casey Jamie Robin Quinn Avery Morgan Rowan Sky Frankie
Jesse Kai Remy Sage River Ari Blair Drew Emery Finley Harper Jules Kit Lee Marley Noel Parker Reese Shay
Tatum Wren Ash Bailey Dakota Eden Hayden Indy Joey Kendall Logan Micah Oakley Peyton Rory Sasha"""
_PET_NAMES = """Pip Biscuit Coco Bubbles Nutmeg Pepper Button Sunny Patch Whiskers Fluffy Ziggy Bingo Tuffy
Muffin Peanut Pickles Sprinkles Doodle Bramble Clover Hazelnut Marble Noodle Pebble Puddle Rusty Scout
Snowy Socks Tango Toffee Waffles Dusty Fuzzy Gizmo Honey Jelly Mochi"""
_PERSON_KINDS = "girl boy kid child"
_ANIMALS = """dog cat bird rabbit bunny fox bear owl mouse frog duck pig cow horse sheep goat hen chick puppy
kitten squirrel deer turtle fish butterfly bee ladybug snail worm hedgehog badger mole otter beaver
raccoon skunk wolf lion tiger elephant giraffe zebra monkey hippo rhino panda koala kangaroo penguin seal
whale dolphin octopus crab starfish parrot eagle hawk robin sparrow crow swan goose pony donkey camel
llama alpaca lamb calf piglet duckling fawn cub bat spider ant dragonfly caterpillar lizard snake gecko
hamster gerbil ferret chipmunk dinosaur dragon moose yak jellyfish seahorse flamingo peacock pelican
toucan cheetah leopard gorilla porcupine walrus lobster beetle cricket firefly goldfish pigeon puffin
tortoise weasel stork heron"""
_THINGS = """ball kite doll drum teddy robot train truck car boat plane bike scooter wagon hat scarf mitten
sock shoe boot coat dress shirt ribbon necklace ring bracelet crown wand book crayon pencil marker
paintbrush puzzle block balloon bucket shovel spade jar box basket bag backpack blanket pillow cup bowl
plate spoon lamp clock watch key shell stone feather acorn pinecone marble bell whistle flute guitar
piano violin trumpet harmonica xylophone tambourine umbrella map compass flashlight lantern candle ladder
rope stick net top sled skateboard helmet glove kettle teapot mug vase photo picture drawing painting card
letter envelope stamp sticker badge medal trophy coin purse wallet gift present toy puppet mask cape
costume camera telescope magnet button bead pebble seashell rock crystal gem jewel rattle pinwheel
windmill sailboat rocket spaceship dollhouse notebook diary journal storybook comic radio phone tablet
headband bow sweater jacket raincoat apron cap bonnet paddle broom brush comb mirror towel sponge bottle
lunchbox tiara locket brooch keychain snowglobe kazoo banjo ukulele accordion whisk ladle rolling
hourglass globe bookmark quilt rug shawl sandal slipper bootee wristband trolley tractor bulldozer
digger helicopter submarine blimp glider canoe raft kayak"""
_PLACES = """park forest beach lake garden farm zoo library school market river meadow hill playground pond
field mountain village town city castle cave island jungle desert valley orchard barn bakery store shop
museum circus fair carnival harbor seaside woods swamp creek waterfall bridge station airport hospital
playroom kitchen attic basement backyard yard porch treehouse clubhouse greenhouse classroom gym pool
aquarium theater lighthouse cabin campsite canyon prairie marsh grove clearing trail road street square
fountain plaza dock pier cliff dunes riverbank lagoon bay shore glen hilltop mill"""
_FOODS = """cookies apples bananas grapes cherries strawberries blueberries oranges pears peaches plums carrots
peas beans potatoes tomatoes cake bread soup pizza pasta noodles rice cheese crackers muffins cupcakes
pancakes waffles sandwiches candy chocolate honey jam butter milk juice lemonade tea popcorn pie cereal
oatmeal yogurt eggs toast corn berries nuts seeds raisins pretzels donuts biscuits buns rolls salad melon
watermelon lemons limes figs dates mangoes kiwis coconuts pumpkins cucumbers lettuce broccoli spinach
celery radishes onions peppers olives chips fries sausages meatballs dumplings tacos syrup pudding custard
jelly gumdrops lollipops marshmallows caramel fudge toffee cocoa cider smoothies scones pastries bagels
cornbread porridge apricots raspberries cranberries"""
_COLORS = """red blue green yellow orange purple pink brown black white gray gold silver golden tan teal
violet indigo turquoise crimson scarlet maroon navy beige lavender lilac"""
_TRAITS = """little small kind brave happy curious clever smart shy gentle friendly funny silly sweet cheerful
quiet loud busy playful helpful polite honest lively bright bold careful caring cute tiny young jolly
merry sleepy grumpy lazy proud calm wise patient eager chatty cheeky clumsy daring dreamy fearless fluffy
fuzzy giggly graceful humble joyful lucky lonely messy nice neat noisy plucky quick speedy sunny
thoughtful tidy wild bouncy chirpy dainty feisty frisky hardy hopeful jumpy keen mellow nimble peppy perky
rosy spunky witty generous"""
_ADJECTIVES = """big small shiny old new soft round heavy light long short tall tiny huge bright dark pretty
beautiful special magic sparkly smooth rough warm cold wet dry clean dirty fancy plain funny strange
colorful striped spotted wooden metal plastic paper glass silky fuzzy bumpy squishy sticky golden little
giant lovely wobbly creaky dusty muddy shimmering glittery velvet woolly knitted painted polished tattered
patched favorite precious"""
_FEELINGS = """sad happy scared angry worried excited upset surprised proud tired lonely curious glad nervous
grumpy cross afraid frightened gloomy hopeful cheerful joyful calm brave sorry thankful grateful shy
jealous bored confused embarrassed amazed delighted thrilled miserable content relieved anxious"""
_ACTIVITIES = """play:played dance:danced sing:sang run:ran jump:jumped swim:swam read:read draw:drew
paint:painted climb:climbed skip:skipped hop:hopped laugh:laughed explore:explored bake:baked cook:cooked
build:built dig:dug ride:rode fly:flew skate:skated hike:hiked fish:fished knit:knitted write:wrote
color:colored sketch:sketched whistle:whistled hum:hummed giggle:giggled twirl:twirled spin:spun
race:raced roll:rolled slide:slid swing:swung splash:splashed paddle:paddled sail:sailed camp:camped
wander:wandered march:marched stomp:stomped tiptoe:tiptoed wiggle:wiggled bounce:bounced clap:clapped
nap:napped rest:rested dream:dreamed sew:sewed juggle:juggled crawl:crawled dive:dove float:floated
glide:glided waddle:waddled surf:surfed ski:skied jog:jogged learn:learned count:counted listen:listened
pretend:pretended tumble:tumbled stretch:stretched scribble:scribbled doodle:doodled chat:chatted
sketch:sketched wade:waded"""
_SPOTS = """tree bush rock log fence bench wall bridge stump hedge shed haystack mailbox boulder gate tent
slide swing car truck table chair bed wagon barrel flowerpot wheelbarrow doghouse bucket"""
_DEEP = """pond river lake hole mud puddle well stream creek ditch fountain sea ocean pool water swamp snow
sand bushes grass leaves"""
_FURNITURE = """bed couch sofa table chair desk rug carpet stairs shelf cupboard closet dresser bench cushion
sink stove fridge oven bathtub drawer crib cradle wardrobe armchair"""
_HOMES = "house cottage cabin hut tent castle apartment burrow nest den treehouse farmhouse igloo palace tower"
_DAYPARTS = "morning afternoon evening night day weekend Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
_SEASONS = "spring summer autumn winter fall"
_WEATHER = "sunny rainy windy snowy cloudy warm cold bright foggy stormy chilly hot breezy frosty misty"
_PARENTS_F = "mom mommy mother grandma granny nana aunt"
_PARENTS_M = "dad daddy father grandpa uncle"
_SOUNDS = "loud strange soft funny little quiet tiny squeaky scary rustling buzzing crackling"
_ADVERBS = """happily quickly slowly quietly loudly carefully gently softly bravely proudly sadly eagerly kindly
gladly cheerfully calmly patiently politely brightly merrily sweetly"""
_WIND = "strong big cold sudden wild gusty"

LEXICON: dict[str, tuple[str, ...]] = {
    "girl_name": tuple(_GIRL_NAMES.split()),
    "boy_name": tuple(_BOY_NAMES.split()),
    "kid_name": tuple(_KID_NAMES.split()),
    "pet_name": tuple(_PET_NAMES.split()),
    "person_kind": tuple(_PERSON_KINDS.split()),
    "animal": tuple(_ANIMALS.split()),
    "thing": tuple(_THINGS.split()),
    "place": tuple(_PLACES.split()),
    "food": tuple(_FOODS.split()),
    "color": tuple(_COLORS.split()),
    "trait": tuple(_TRAITS.split()),
    "adj": tuple(_ADJECTIVES.split()),
    "feeling": tuple(_FEELINGS.split()),
    "act": tuple(dict.fromkeys(pair.split(":")[0] for pair in _ACTIVITIES.split())),
    "act_past": tuple(dict.fromkeys(pair.split(":")[1] for pair in _ACTIVITIES.split())),
    "spot": tuple(_SPOTS.split()),
    "deep": tuple(_DEEP.split()),
    "furniture": tuple(_FURNITURE.split()),
    "home": tuple(_HOMES.split()),
    "daypart": tuple(_DAYPARTS.split()),
    "season": tuple(_SEASONS.split()),
    "weather": tuple(_WEATHER.split()),
    "parent": tuple(_PARENTS_F.split() + _PARENTS_M.split()),
    "sound": tuple(_SOUNDS.split()),
    "adverb": tuple(_ADVERBS.split()),
    "wind": tuple(_WIND.split()),
}
LEXICON["name"] = LEXICON["girl_name"] + LEXICON["boy_name"] + LEXICON["kid_name"] + LEXICON["pet_name"]

# --------------------------------------------------------------------------------------------
# Grammar: nonterminal -> ["[weight] symbols ..."]
# --------------------------------------------------------------------------------------------

_SPEAKERS_AFTER = {"H": "$H", "F": "$F", "P": "$H.pos $P"}
_SPEAKERS_BEFORE = {"H": ("$H", "$H.sub"), "F": ("$F", "$F.sub"), "P": ("$H.pos $P",)}


def _say_rules(who: str) -> list[str]:
    """Dialogue frames for one speaker: quote first with "said X", or "X said," then the quote."""
    after = _SPEAKERS_AFTER[who]
    rules = [
        f'3 " Q_STMT , " said {after} .',
        f'3 " Q_ASK ? " asked {after} .',
        f'2 " Q_EXCL ! " said {after} .',
        f'1 " Q_EXCL ! " cried {after} .',
        f'1 " Q_EXCL ! " shouted {after} .',
    ]
    for before in _SPEAKERS_BEFORE[who]:
        rules += [
            f'2 {before} said , " Q_STMT . "',
            f'1 {before} asked , " Q_ASK ? "',
            f'1 {before} shouted , " Q_EXCL ! "',
        ]
    return rules


RULES: dict[str, list[str]] = {
    # ---- phrases ----
    "TRAIT": ["4 @trait", "1 @trait and @trait"],
    "KIND": ["@person_kind", "@animal"],
    "ACT": ["5 @act", "2 @act with $H.pos friends", "1 @act in the $PLACE", "1 play with $H.pos $THING"],
    "THING_NP": ["3 $H.pos $THING", "2 $H.pos @adj $THING", "1 $H.pos @color $THING", "1 the $THING"],
    "WHEN": ["one day", "one @daypart", "one @weather @daypart", "in the @season", "that @daypart",
             "the next @daypart", "later that day", "after a while", "soon"],
    "MORAL_VP": ["be kind to others", "share with your friends", "tell the truth", "help others",
                 "never give up", "be brave", "listen to your @parent", "say sorry", "be patient",
                 "say thank you", "ask for help", "be a good friend", "try new things", "take turns",
                 "be careful", "look after your things", "be gentle with animals", "work together"],
    "Q_STMT": ["3 I want to @act", "2 I love my $THING", "2 let's @act together", "2 we can @act at the $PLACE",
               "2 I am so @feeling", "2 you are my best friend", "2 I will help you", "1 this is so much fun",
               "1 it is okay", "1 I am sorry", "2 look at the @adj $ANIMAL", "1 I like your @color $THING",
               "1 we should go home now", "1 thank you for helping me", "1 don't worry",
               "1 everything will be okay", "1 I have an idea", "1 I can not find my $THING",
               "1 you can play with my $THING", "1 the $ANIMAL looks @feeling", "1 I am not @feeling anymore"],
    "Q_ASK": ["3 can we @act", "2 can you help me", "2 where is my $THING", "2 do you want to @act with me",
              "1 what is that", "2 are you okay", "1 will you be my friend", "1 can I play with your $THING",
              "1 can we go to the $PLACE", "1 why are you @feeling", "1 what should we do",
              "1 do you like my $THING", "1 is the $ANIMAL okay"],
    "Q_EXCL": ["2 help", "2 oh no", "2 look", "2 yay", "2 thank you", "1 wow", "1 come back", "1 hooray",
               "1 be careful", "1 thank you so much", "1 I did it", "1 we did it", "1 let's go",
               "1 watch out", "1 come on", "1 thank you , $F", "1 thank you , $H"],
    # ---- beginnings ----
    "OPEN": [
        "4 once upon a time , there was A TRAIT $H.kind named $H .",
        "2 once upon a time , in A @adj @home near the $PLACE , there lived A TRAIT $H.kind named $H .",
        "2 once upon a time , A TRAIT $H.kind named $H lived in A @adj @home .",
        "2 there once was A TRAIT $H.kind named $H .",
        "1 long ago , there was A TRAIT $H.kind called $H .",
        "2 $H was A TRAIT $H.kind who lived near the $PLACE .",
        "1 in A @adj @home by the $PLACE lived A TRAIT $H.kind named $H .",
        "1 once there was A TRAIT $H.kind whose name was $H .",
    ],
    "LIKE": [
        "3 $H.sub loved to ACT .",
        "2 $H.sub loved to @act outside .",
        "2 $H.sub had A @adj $THING that $H.sub loved very much .",
        "2 every day , $H.sub played with THING_NP in the $PLACE .",
        "1 $H.pos favorite thing was A @color $THING .",
        "1 $H.be always TRAIT .",
        "1 $H.sub liked to @act with $H.pos friend $F .",
        "1 more than anything , $H.sub loved $H.pos @adj $THING .",
    ],
    "OPEN_DAY": [
        "2 WHEN , $H.sub went to the $PLACE with $H.pos $P .",
        "2 WHEN , $H and $H.pos $P went to the $PLACE .",
        "1 $H.pos $P took $H.obj to the $PLACE .",
        "1 it was A @weather day , and $H.sub went to the $PLACE .",
        "1 WHEN , $H.sub walked to the $PLACE to @act .",
        "1 the sun was shining , so $H.sub went to the $PLACE .",
    ],
    "MEET": [
        "2 WHEN , $H met A TRAIT $F.kind named $F .",
        "2 at the $PLACE , $H.sub saw A TRAIT $F.kind named $F .",
        "1 $H.pos best friend was A TRAIT $F.kind named $F .",
        "1 there , $H.sub met A @feeling $F.kind called $F .",
    ],
    "SEE": [
        "2 $H.sub saw A @adj @color $ANIMAL near the @spot .",
        "2 at the $PLACE , $H.sub saw A @adj $ANIMAL .",
        "1 $H.sub heard A @sound sound coming from the @spot .",
        "1 the sky was @color and the sun was warm .",
        "1 there were flowers and birds everywhere .",
    ],
    "FEEL_SAD": [
        "3 $H.be very @feeling .",
        "2 $H.sub felt @feeling and started to cry .",
        "1 $H.sub sat down and felt very @feeling .",
        "1 tears came to $H.pos eyes .",
        "1 $H.be so @feeling that $H.sub did not want to play .",
    ],
    "FEEL_HAPPY": [
        "3 $H.be so happy .",
        "2 $H.sub smiled A big smile .",
        "1 $H.sub felt @feeling and proud .",
        "1 $H.sub jumped up and down with joy .",
        "1 $H.pos heart was full of joy .",
    ],
    "SAY_H": _say_rules("H"),
    "SAY_F": _say_rules("F"),
    "SAY_P": _say_rules("P"),
    "TOGETHER": [
        "2 $H and $F played together all day .",
        "1 $H and $F @act_past and laughed until the sun went down .",
        "1 they @act_past together in the $PLACE .",
        "1 then they shared some @food and @food .",
    ],
    "END": [
        "3 from that day on , $H and $F were best friends .",
        "2 it was the best day ever .",
        "2 that night , $H.sub went to bed with A big smile .",
        "1 $H.sub hugged $H.pos $P and said thank you .",
        "1 and they all lived happily ever after .",
        "1 $H never forgot that @adj day at the $PLACE .",
        "1 then they went home , tired and happy .",
        "1 $H.sub @act_past @adverb all the way home .",
    ],
    "MORAL": [
        "3 the moral of the story is to always MORAL_VP .",
        "2 $H learned that it is good to MORAL_VP .",
        "1 $H learned to MORAL_VP .",
        "1 from then on , $H always remembered to MORAL_VP .",
    ],
    # ---- problems and resolutions ----
    "LOST_PROB": [
        "2 but then , $H.sub lost THING_NP .",
        "2 $H.sub could not find $H.pos $THING anywhere .",
        "1 when $H.sub looked up , $H.pos $THING was gone .",
        "1 oh no , $H.pos $THING was gone !",
    ],
    "LOST_SEARCH": [
        "2 they looked under the @furniture and behind the @spot .",
        "2 $H and $F looked everywhere for the $THING .",
        "1 $H.sub looked in the $PLACE and under every @spot .",
        "1 $F helped $H look for the $THING .",
    ],
    "LOST_FOUND": [
        "2 at last , they found the $THING under A @spot .",
        "2 finally , $H.sub saw the $THING next to A @adj @spot .",
        "1 the $THING was behind the @spot all along !",
        "1 $F found the $THING and gave it back to $H .",
    ],
    "WIND_PROB": [
        "2 suddenly , A @wind wind blew $H.pos $THING away .",
        "1 the wind took the $THING high into the sky .",
    ],
    "STUCK_PROB": [
        "2 A little $ANIMAL was stuck in A @spot .",
        "1 the $ANIMAL could not get down from the @spot .",
        "1 A @feeling $ANIMAL was stuck in the @deep .",
    ],
    "STUCK_HELP": [
        "2 $H.sub climbed up and helped the $ANIMAL get down .",
        "1 $H and $F used A long stick to help the $ANIMAL .",
        "1 $H.sub gently picked up the $ANIMAL and set it free .",
        "1 $H.pos $P helped $H.obj save the $ANIMAL .",
    ],
    "STUCK_THANKS": [
        "2 the $ANIMAL was happy and ran back to its home .",
        "1 the $ANIMAL licked $H.pos hand to say thank you .",
        "1 the $ANIMAL @act_past around $H.obj with joy .",
    ],
    "BROKEN_PROB": [
        "2 $H.pos $THING fell on the floor and broke .",
        "1 $F played with the $THING too hard , and it broke .",
        "1 suddenly , the $THING fell into the @deep .",
    ],
    "BROKEN_FIX": [
        "2 $H.pos $P fixed the $THING with some glue .",
        "1 $H and $F fixed the $THING together .",
        "1 $F said sorry and helped fix the $THING .",
        "1 $H.pos $P pulled the $THING out of the @deep and cleaned it .",
    ],
    "SHARE_PROB": [
        "2 $F wanted to play with the $THING too , but $H said no .",
        "1 $F took the $THING and would not give it back .",
        "1 $H did not want to share $H.pos $THING .",
    ],
    "SHARE_FIX": [
        "2 then $H.sub had an idea , and they took turns .",
        "1 $H shared $H.pos $THING with $F .",
        "1 they decided to play with the $THING together .",
        "1 $F gave the $THING back and said sorry .",
    ],
    "RAIN_PROB": [
        "2 but then , it started to rain , and $H.sub could not @act outside .",
        "1 dark clouds came , and soon it was raining hard .",
    ],
    "RAIN_FIX": [
        "2 so $H and $F built A big fort with blankets .",
        "1 $H.pos $P made some @food and they had A picnic on the floor .",
        "1 after A while , the rain stopped and the sun came out .",
        "1 $H.sub played with $H.pos $THING by the window .",
    ],
    "SCARED_PROB": [
        "2 that night , $H.sub heard A @sound noise outside $H.pos window .",
        "1 the room was dark , and $H.be scared .",
        "1 $H.be afraid of the big dark @place .",
    ],
    "SCARED_FIX": [
        "2 $H.pos $P turned on the light , and it was only A little $ANIMAL .",
        "1 it was just the wind in the @spot .",
        "1 $H.sub took A deep breath and felt brave .",
        "1 $H.pos $P gave $H.obj A big hug .",
    ],
    "BAKE_START": [
        "2 $H and $H.pos $P wanted to bake A cake .",
        "1 $H.sub wanted to make some @food for $F .",
        "1 they put flour , eggs and sugar in A big bowl .",
    ],
    "BAKE_PROB": [
        "1 $H.sub dropped the bowl , and flour went everywhere .",
        "1 the cake was too hot , so they had to wait .",
        "1 $H.sub forgot the sugar , and the @food tasted funny .",
    ],
    "BAKE_END": [
        "2 at last , the cake was ready , and it was yummy .",
        "1 they shared the @food with all their friends .",
        "1 everyone said it was the best cake ever .",
    ],
    "GARDEN_START": [
        "2 $H.sub planted A little seed in the garden .",
        "1 $H and $H.pos $P planted some seeds near the @spot .",
    ],
    "GARDEN_WAIT": [
        "2 every day , $H.sub gave the seed some water .",
        "1 $H.sub waited and waited , but nothing happened .",
        "1 $H.sub asked , \" when will it grow ? \"",
    ],
    "GARDEN_END": [
        "2 one morning , A @color flower was growing in the garden .",
        "1 soon , there was A big plant with @color flowers .",
    ],
    "RACE_START": [
        "2 $H and $F wanted to have A race to the @spot .",
        "1 all the animals in the $PLACE had A big race .",
    ],
    "RACE_PROB": [
        "2 $F ran very fast , but then $F.sub fell down .",
        "1 $H.sub tripped over A @spot and hurt $H.pos knee .",
    ],
    "RACE_END": [
        "2 $H stopped to help , and they finished the race together .",
        "1 it did not matter who won , because they had fun .",
    ],
    "GIFT_START": [
        "2 it was $F.pos birthday , and $H wanted to give $F.obj A gift .",
        "1 $H.sub wanted to make A special gift for $H.pos $P .",
    ],
    "GIFT_MAKE": [
        "2 $H.sub made A @color $THING with paper and glue .",
        "1 $H.sub picked some @color flowers from the garden .",
    ],
    "GIFT_END": [
        "2 when $F saw the gift , $F.sub smiled and said thank you .",
        "1 $H.pos $P loved the gift and gave $H.obj A big hug .",
    ],
    "LOSTWAY_PROB": [
        "2 $H walked too far and did not know the way home .",
        "1 the trees were tall , and $H.be lost in the @place .",
    ],
    "LOSTWAY_FIX": [
        "2 A @trait $ANIMAL showed $H.obj the way back .",
        "1 $H.sub followed the path , and soon $H.sub saw $H.pos @home .",
        "1 $H.pos $P was waiting by the gate .",
    ],
    "REACH_PROB": [
        "2 the $THING was on A high shelf , and $H.be too small to reach it .",
        "1 $H.sub tried to reach the $THING , but it was too high .",
    ],
    "REACH_FIX": [
        "2 $F held the ladder , and $H.sub climbed up to get it .",
        "1 $H.pos $P lifted $H.obj up , and $H.sub got the $THING .",
    ],
}

STORY_SHAPES: tuple[tuple[str, ...], ...] = tuple(tuple(s.split()) for s in """
OPEN LIKE OPEN_DAY LOST_PROB FEEL_SAD SAY_H LOST_SEARCH LOST_FOUND FEEL_HAPPY MORAL
OPEN LIKE MEET SAY_F LOST_PROB SAY_H LOST_SEARCH LOST_FOUND END
OPEN LIKE WIND_PROB FEEL_SAD SAY_F LOST_SEARCH LOST_FOUND SAY_H END
OPEN OPEN_DAY SEE STUCK_PROB SAY_H STUCK_HELP STUCK_THANKS FEEL_HAPPY MORAL
OPEN MEET SEE STUCK_PROB SAY_F STUCK_HELP STUCK_THANKS TOGETHER END
OPEN LIKE STUCK_PROB FEEL_SAD STUCK_HELP STUCK_THANKS END MORAL
OPEN LIKE BROKEN_PROB FEEL_SAD SAY_H BROKEN_FIX FEEL_HAPPY MORAL
OPEN MEET SAY_H BROKEN_PROB SAY_F BROKEN_FIX TOGETHER END
OPEN LIKE OPEN_DAY BROKEN_PROB SAY_P BROKEN_FIX FEEL_HAPPY END
OPEN LIKE MEET SHARE_PROB FEEL_SAD SAY_F SHARE_FIX TOGETHER MORAL
OPEN MEET SHARE_PROB SAY_H SHARE_FIX END MORAL
OPEN LIKE SHARE_PROB SAY_F FEEL_SAD SHARE_FIX FEEL_HAPPY END
OPEN LIKE RAIN_PROB FEEL_SAD SAY_P RAIN_FIX FEEL_HAPPY END
OPEN MEET SAY_F RAIN_PROB RAIN_FIX TOGETHER END
OPEN OPEN_DAY RAIN_PROB SAY_H RAIN_FIX SAY_H END MORAL
OPEN LIKE SCARED_PROB FEEL_SAD SAY_H SCARED_FIX SAY_P END
OPEN SCARED_PROB SAY_H SCARED_FIX FEEL_HAPPY MORAL
OPEN LIKE BAKE_START SAY_H BAKE_PROB BAKE_END FEEL_HAPPY END
OPEN MEET BAKE_START BAKE_PROB SAY_F BAKE_END TOGETHER END
OPEN LIKE GARDEN_START GARDEN_WAIT SAY_P GARDEN_END FEEL_HAPPY MORAL
OPEN GARDEN_START GARDEN_WAIT FEEL_SAD GARDEN_END SAY_H END
OPEN MEET RACE_START SAY_F RACE_PROB RACE_END TOGETHER MORAL
OPEN LIKE RACE_START RACE_PROB FEEL_SAD RACE_END END
OPEN MEET GIFT_START GIFT_MAKE GIFT_END SAY_F END
OPEN LIKE GIFT_START GIFT_MAKE SAY_H GIFT_END FEEL_HAPPY
OPEN OPEN_DAY SEE LOSTWAY_PROB FEEL_SAD SAY_H LOSTWAY_FIX FEEL_HAPPY MORAL
OPEN LIKE LOSTWAY_PROB SAY_H LOSTWAY_FIX END MORAL
OPEN LIKE REACH_PROB SAY_H REACH_FIX FEEL_HAPPY MORAL
OPEN MEET REACH_PROB SAY_F REACH_FIX TOGETHER END
OPEN LIKE OPEN_DAY SEE SAY_H TOGETHER END
OPEN MEET SAY_H SAY_F TOGETHER FEEL_HAPPY END
OPEN LIKE OPEN_DAY MEET SAY_F TOGETHER END MORAL
""".strip().splitlines())

SENTENCE_TYPES: tuple[str, ...] = tuple(dict.fromkeys(s for shape in STORY_SHAPES for s in shape))
START = "S"

# Recognition: what each story binding widens to.
_BINDING_CLASSES = {"$H": "NAME", "$F": "NAME", "$P": "@parent", "$THING": "@thing", "$PLACE": "@place",
                    "$ANIMAL": "@animal", "$FOOD": "@food"}
_ATTRIBUTE_RULES = {
    "kind": "KIND",
    "sub": "PRON_SUB",
    "obj": "PRON_OBJ",
    "pos": "PRON_POS",
    "be": "PRON_BE",
}
_RECOGNITION_RULES: dict[str, list[str]] = {
    "NAME": ["@name"],
    "PRON_SUB": ["he", "she", "they"],
    "PRON_OBJ": ["him", "her", "them"],
    "PRON_POS": ["his", "her", "their"],
    "PRON_BE": ["he was", "she was", "they were"],
    START: list(SENTENCE_TYPES),
}
_PRONOUNS = {
    "she": {"sub": "she", "obj": "her", "pos": "her", "be": "she was"},
    "he": {"sub": "he", "obj": "him", "pos": "his", "be": "he was"},
    "they": {"sub": "they", "obj": "them", "pos": "their", "be": "they were"},
}
_VOWEL_EXCEPTIONS = ("uni", "use", "eu", "one")
_TOKEN_RE = re.compile(r"[A-Za-z']+|[.,!?\"]|\S")
_PUNCT = {".", ",", "!", "?"}


def _parse_rule(text: str) -> tuple[float, tuple[str, ...]]:
    parts = text.split()
    if parts[0].replace(".", "", 1).isdigit():
        return float(parts[0]), tuple(parts[1:])
    return 1.0, tuple(parts)


def _is_nonterminal(symbol: str) -> bool:
    return len(symbol) > 1 and symbol.replace("_", "").isalpha() and symbol.isupper()


GRAMMAR: dict[str, tuple[tuple[float, tuple[str, ...]], ...]] = {
    name: tuple(_parse_rule(r) for r in rules) for name, rules in RULES.items()
}


def _check_grammar() -> None:
    for name, rules in GRAMMAR.items():
        for _, body in rules:
            for sym in body:
                if _is_nonterminal(sym) and sym not in GRAMMAR:
                    raise AssertionError(f"rule {name} uses undefined nonterminal {sym}")
                if sym.startswith("@") and sym[1:] not in LEXICON:
                    raise AssertionError(f"rule {name} uses unknown word class {sym}")
                if sym.startswith("$") and sym.split(".")[0] not in _BINDING_CLASSES:
                    raise AssertionError(f"rule {name} uses unknown binding {sym}")


_check_grammar()


def starts_with_vowel_sound(word: str) -> bool:
    """Whether ``word`` takes "an" (simple spelling rule). Usage: ``starts_with_vowel_sound("owl")``"""
    w = word.lower()
    return bool(w) and w[0] in "aeiou" and not w.startswith(_VOWEL_EXCEPTIONS)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Character:
    """One member of a story's cast: ``Character("Lily", "girl", "she")``."""

    name: str
    kind: str
    pronoun: str  # "she", "he" or "they"

    def attribute(self, attr: str) -> str:
        if attr == "kind":
            return self.kind
        return _PRONOUNS[self.pronoun][attr]


@dataclasses.dataclass(frozen=True)
class Story:
    """A generated story with its cast (``"H"`` hero, ``"F"`` friend, ``"P"`` parent) and shape."""

    text: str
    cast: dict[str, Character]
    shape: tuple[str, ...]


def _make_child(rng: random.Random, avoid: str = "") -> Character:
    roll = rng.random()
    if roll < 0.42:
        name, kind, pronoun = rng.choice(LEXICON["girl_name"]), rng.choice(("girl", "girl", "kid")), "she"
    elif roll < 0.84:
        name, kind, pronoun = rng.choice(LEXICON["boy_name"]), rng.choice(("boy", "boy", "kid")), "he"
    elif roll < 0.92:
        name, kind, pronoun = rng.choice(LEXICON["kid_name"]), rng.choice(("kid", "child")), "they"
    else:
        name, kind = rng.choice(LEXICON["pet_name"]), rng.choice(LEXICON["animal"])
        pronoun = rng.choice(("she", "he"))
    if name == avoid:
        return _make_child(rng, avoid)
    return Character(name, kind, pronoun)


def _make_cast(rng: random.Random) -> tuple[dict[str, Character], dict[str, str]]:
    hero = _make_child(rng)
    friend = _make_child(rng, avoid=hero.name)
    if rng.random() < 0.5:
        parent = Character(rng.choice(_PARENTS_F.split()), "parent", "she")
    else:
        parent = Character(rng.choice(_PARENTS_M.split()), "parent", "he")
    things = {
        "$THING": rng.choice(LEXICON["thing"]),
        "$PLACE": rng.choice(LEXICON["place"]),
        "$ANIMAL": rng.choice(LEXICON["animal"]),
        "$FOOD": rng.choice(LEXICON["food"]),
    }
    return {"H": hero, "F": friend, "P": parent}, things


def _expand(symbol: str, rng: random.Random, cast: dict[str, Character], things: dict[str, str],
            out: list[str]) -> None:
    if symbol in GRAMMAR:
        rules = GRAMMAR[symbol]
        _, body = rng.choices(rules, weights=[w for w, _ in rules])[0]
        for sym in body:
            _expand(sym, rng, cast, things, out)
    elif symbol.startswith("@"):
        out.append(rng.choice(LEXICON[symbol[1:]]))
    elif symbol in things:
        out.append(things[symbol])
    elif symbol.startswith("$"):
        who, _, attr = symbol[1:].partition(".")
        character = cast[who]
        out.extend((character.attribute(attr) if attr else character.name).split())
    else:
        out.append(symbol)


def _finish(tokens: list[str]) -> str:
    """Resolve articles, capitalise sentence and quote starts, and join with English spacing."""
    words = list(tokens)
    for i, tok in enumerate(words):
        if tok == "A":
            following = next((w for w in words[i + 1:] if w not in _PUNCT and w != '"'), "")
            words[i] = "an" if starts_with_vowel_sound(following) else "a"
    parts: list[str] = []
    quotes = 0
    capitalise, glue = True, True
    for tok in words:
        if tok == '"':
            opening = quotes % 2 == 0
            quotes += 1
            parts.append('"' if (glue or not opening) else ' "')
            capitalise, glue = opening, opening
            continue
        if capitalise:
            tok = tok[0].upper() + tok[1:]
            capitalise = False
        parts.append(tok if (glue or tok in _PUNCT) else " " + tok)
        glue = False
    return "".join(parts)


def generate_sentence(symbol: str, rng: random.Random, cast: dict[str, Character] | None = None,
                      things: dict[str, str] | None = None) -> str:
    """One sentence of type ``symbol`` (e.g. ``"OPEN"``); a fresh cast if none is given.

    Usage: ``generate_sentence("SAY_H", random.Random(0))``
    """
    if cast is None or things is None:
        cast, things = _make_cast(rng)
    out: list[str] = []
    _expand(symbol, rng, cast, things, out)
    return _finish(out)


def tell_story(rng: random.Random) -> Story:
    """A story with its cast and shape. Usage: ``tell_story(random.Random(0)).text``"""
    shape = rng.choice(STORY_SHAPES)
    cast, things = _make_cast(rng)
    text = " ".join(generate_sentence(sym, rng, cast, things) for sym in shape)
    return Story(text, cast, shape)


def generate_story(rng: random.Random) -> str:
    """One story as plain text. Usage: ``generate_story(random.Random(0))``"""
    return tell_story(rng).text


def generate_stories(n: int, seed: int = 0) -> list[str]:
    """``n`` stories, deterministic in ``seed``. Usage: ``generate_stories(1000, seed=0)``"""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------------

# A compiled symbol: ("w", word) literal, ("c", class) lexicon, ("a", "") article, ("n", name).
Symbol = tuple[str, str]


def _compile_symbol(sym: str) -> tuple[Symbol, ...]:
    if sym == "A":
        return (("a", ""),)
    if sym.startswith("@"):
        return (("c", sym[1:]),)
    if sym.startswith("$"):
        base, _, attr = sym.partition(".")
        target = _ATTRIBUTE_RULES[attr] if attr else _BINDING_CLASSES[base]
        return _compile_symbol(target)
    if _is_nonterminal(sym):
        return (("n", sym),)
    return (("w", sym),)


@lru_cache(maxsize=1)
def _recogniser() -> tuple[dict[str, list[tuple[Symbol, ...]]], dict[str, dict[str, list[int]]],
                           dict[str, frozenset[str]]]:
    """Compiled rules, a first-word index per nonterminal, and word sets per class."""
    raw = {**{k: [" ".join(b) for _, b in v] for k, v in GRAMMAR.items()}, **_RECOGNITION_RULES}
    rules = {
        name: [tuple(c for sym in body.split() for c in _compile_symbol(sym)) for body in bodies]
        for name, bodies in raw.items()
    }
    classes = {name: frozenset(words) for name, words in LEXICON.items()}
    first: dict[str, set[str]] = {name: set() for name in rules}

    def first_of(sym: Symbol) -> set[str]:
        kind, value = sym
        if kind == "w":
            return {value}
        if kind == "c":
            return set(classes[value])
        if kind == "a":
            return {"a", "an"}
        return first[value]

    changed = True
    while changed:
        changed = False
        for name, bodies in rules.items():
            for body in bodies:
                new = first_of(body[0]) - first[name]
                if new:
                    first[name] |= new
                    changed = True
    index: dict[str, dict[str, list[int]]] = {}
    for name, bodies in rules.items():
        table: dict[str, list[int]] = {}
        for i, body in enumerate(bodies):
            for word in first_of(body[0]):
                table.setdefault(word, []).append(i)
        index[name] = table
    return rules, index, classes


def tokenize(sentence: str) -> list[str]:
    """Word and punctuation tokens of a sentence. Usage: ``tokenize('"Hi!" said Tom.')``"""
    return _TOKEN_RE.findall(sentence)


def _candidates(tokens: Sequence[str]) -> list[tuple[str, ...]] | None:
    """Forms each token may match: at sentence and quote starts a word must be capitalised and
    also matches its lower-cased form. ``None`` when such a start is not capitalised."""
    out = []
    quotes = 0
    previous_opened = True
    for tok in tokens:
        if tok == '"':
            quotes += 1
            previous_opened = quotes % 2 == 1
            out.append((tok,))
            continue
        if previous_opened and tok[0].islower():
            return None
        forms = (tok, tok[0].lower() + tok[1:]) if previous_opened else (tok,)
        out.append(forms)
        previous_opened = False
    return out


def is_grammatical(sentence: str) -> bool:
    """Whether the grammar can produce this one sentence (case- and punctuation-exact).

    Usage: ``is_grammatical("She loved to play outside.")``
    """
    tokens = tokenize(sentence.strip())
    if not tokens:
        return False
    rules, index, classes = _recogniser()
    cands = _candidates(tokens)
    if cands is None:
        return False
    n = len(tokens)
    memo: dict[tuple[str, int], frozenset[int]] = {}

    def match(sym: Symbol, i: int) -> frozenset[int]:
        if i >= n:
            return frozenset()
        kind, value = sym
        if kind == "n":
            return ends(value, i)
        forms = cands[i]
        if kind == "w":
            return frozenset((i + 1,)) if value in forms else frozenset()
        if kind == "c":
            return frozenset((i + 1,)) if any(f in classes[value] for f in forms) else frozenset()
        if i + 1 >= n:
            return frozenset()
        vowel = starts_with_vowel_sound(tokens[i + 1])
        return frozenset((i + 1,)) if ("an" if vowel else "a") in forms else frozenset()

    def ends(name: str, i: int) -> frozenset[int]:
        key = (name, i)
        if key in memo:
            return memo[key]
        memo[key] = frozenset()
        table = index[name]
        rule_ids = {r for f in cands[i] for r in table.get(f, ())}
        result: set[int] = set()
        for r in rule_ids:
            positions = {i}
            for sym in rules[name][r]:
                positions = {e for p in positions for e in match(sym, p)}
                if not positions:
                    break
            result |= positions
        memo[key] = frozenset(result)
        return memo[key]

    return n in ends(START, 0)


# --------------------------------------------------------------------------------------------
# Prefix recognition: which next tokens keep a text on the grammar's path
# --------------------------------------------------------------------------------------------

# An Earley item of a sentence's parse: (nonterminal, rule index, dot, start position).
Item = tuple[str, int, int, int]
_ARTICLES = ("a", "an", "A", "An")


@dataclasses.dataclass(frozen=True)
class _Chart:
    """One Earley chart column: the parse items after a sentence's words, and what may come next."""

    items: frozenset[Item]
    waiting: dict[str, tuple[Item, ...]]  # nonterminal -> items whose dot is before it
    words: frozenset[str]  # literal words and class words the next word may be (lower-case forms)
    article: bool  # whether the next word may be the article "a" / "an"
    done: bool  # whether a whole sentence ends here


def _opened(sentence: tuple[str, ...]) -> bool:
    """Whether the next word of ``sentence`` starts a sentence or a quote (so it is capitalised)."""
    return not sentence or (sentence[-1] == '"' and sentence.count('"') % 2 == 1)


def _vowel_key(sentence: tuple[str, ...], following: str) -> bool | None:
    """What a chart after ``sentence`` needs to know about the word after it: whether it starts with
    a vowel sound when ``sentence`` ends in "a"/"an" (the article agrees with it), else nothing."""
    return starts_with_vowel_sound(following) if sentence and sentence[-1] in _ARTICLES else None


@lru_cache(maxsize=1 << 14)
def _chart(sentence: tuple[str, ...], vowel_next: bool | None = None) -> _Chart:
    """The Earley chart after the words of one (partial) sentence; ``vowel_next`` as in :func:`_vowel_key`."""
    rules, _, classes = _recogniser()
    n = len(sentence)
    if n == 0:
        seeds = {(START, r, 0, 0) for r in range(len(rules[START]))}
    else:
        previous = _chart(sentence[:-1], _vowel_key(sentence[:-1], sentence[-1]))
        seeds = {(name, r, dot + 1, origin) for name, r, dot, origin in previous.items
                 if dot < len(rules[name][r]) and _scans(rules[name][r][dot], sentence, vowel_next, classes)}
    return _close(seeds, sentence, rules, classes)


def _scans(symbol: Symbol, sentence: tuple[str, ...], vowel_next: bool | None,
           classes: dict[str, frozenset[str]]) -> bool:
    """Whether the last word of ``sentence`` matches a terminal ``symbol`` (as ``is_grammatical`` does)."""
    kind, value = symbol
    word = sentence[-1]
    opened = word != '"' and _opened(sentence[:-1])
    if opened and word[0].islower():
        return False
    forms = (word, word[0].lower() + word[1:]) if opened else (word,)
    if kind == "w":
        return value in forms
    if kind == "c":
        return any(f in classes[value] for f in forms)
    return kind == "a" and vowel_next is not None and ("an" if vowel_next else "a") in forms


def _close(seeds: set[Item], sentence: tuple[str, ...], rules: dict[str, list[tuple[Symbol, ...]]],
           classes: dict[str, frozenset[str]]) -> _Chart:
    """Earley prediction and completion from ``seeds`` (the grammar has no empty rules)."""
    n = len(sentence)
    items, todo = set(seeds), list(seeds)
    while todo:
        name, r, dot, origin = todo.pop()
        body = rules[name][r]
        if dot < len(body):
            kind, value = body[dot]
            new = [(value, r2, 0, n) for r2 in range(len(rules[value]))] if kind == "n" else []
        else:
            earlier = _chart(sentence[:origin], _vowel_key(sentence[:origin], sentence[origin]))
            new = [(pn, pr, pd + 1, po) for pn, pr, pd, po in earlier.waiting.get(name, ())]
        for item in new:
            if item not in items:
                items.add(item)
                todo.append(item)
    waiting: dict[str, list[Item]] = {}
    words: set[str] = set()
    article = False
    for name, r, dot, origin in items:
        body = rules[name][r]
        if dot == len(body):
            continue
        kind, value = body[dot]
        if kind == "n":
            waiting.setdefault(value, []).append((name, r, dot, origin))
        elif kind == "w":
            words.add(value)
        elif kind == "c":
            words |= classes[value]
        else:
            article = True
    done = any(name == START and origin == 0 and dot == len(rules[name][r]) for name, r, dot, origin in items)
    return _Chart(frozenset(items), {k: tuple(v) for k, v in waiting.items()}, frozenset(words), article, done)


def _sentence_charts(sentence: tuple[str, ...]) -> tuple[_Chart, ...]:
    """The charts a sentence may continue from: one, or two when it ends in "a"/"an" (the next word
    decides whether that was the article)."""
    if sentence and sentence[-1] in _ARTICLES:
        return _chart(sentence, True), _chart(sentence, False)
    return (_chart(sentence),)


@lru_cache(maxsize=1 << 14)
def _starts(story: tuple[str, ...]) -> frozenset[int]:
    """Where the current sentence of ``story`` (its words so far) may have started; empty when the words
    are no prefix of any sequence of grammatical sentences."""
    if not story:
        return frozenset((0,))
    before = story[:-1]
    options = set(_starts(before)) | ({len(before)} if _ends(before) else set())
    return frozenset(s for s in options if _live(story[s:]))


def _live(sentence: tuple[str, ...]) -> bool:
    """Whether some word may follow ``sentence``: after "a"/"an" as the article, one that agrees with it."""
    charts = _sentence_charts(sentence)
    if len(charts) == 1:
        return bool(charts[0].items)
    return any(starts_with_vowel_sound(word) == vowel for chart, vowel in zip(charts, (True, False))
               for word in chart.words | ({"a", "an"} if chart.article else set()))


def _ends(story: tuple[str, ...]) -> bool:
    """Whether ``story``'s words end at a sentence boundary (a story may stop, or a new sentence start)."""
    return bool(story) and any(_chart(story[s:]).done for s in _starts(story))


def _piece(story: tuple[str, ...], sentence: tuple[str, ...], word: str) -> str:
    """How ``word`` is written after ``story``, as ``_finish`` and ``tell_story`` join words: no space at
    the start, after an opening quote, before punctuation and before a closing quote."""
    glue = not story or (bool(sentence) and _opened(sentence))
    closing = word == '"' and sentence.count('"') % 2 == 1
    return word if glue or closing or word in _PUNCT else " " + word


@dataclasses.dataclass(frozen=True)
class _Pieces:
    """The next words after a story's words, as the text each adds (see :func:`_piece`)."""

    words: dict[str, tuple[str, ...]]  # text it adds -> the words it may be
    texts: tuple[str, ...]  # those texts, sorted
    lengths: frozenset[int]  # their lengths

    def continue_with(self, text: str) -> bool:
        """Whether some piece starts with ``text``."""
        i = bisect.bisect_left(self.texts, text)
        return i < len(self.texts) and self.texts[i].startswith(text)


@lru_cache(maxsize=1 << 11)
def _pieces(story: tuple[str, ...]) -> _Pieces:
    """Every next word after ``story``'s words."""
    out: dict[str, set[str]] = {}

    def add(sentence: tuple[str, ...], chart: _Chart, vowel: bool | None) -> None:
        candidates = set(chart.words) | ({"a", "an"} if chart.article else set())
        for word in candidates:
            if vowel is not None and starts_with_vowel_sound(word) != vowel:
                continue
            written = word[0].upper() + word[1:] if word != '"' and _opened(sentence) else word
            if written in _ARTICLES and not _live(sentence + (written,)):
                continue  # "an" before words that all take "a", or the other way round
            out.setdefault(_piece(story, sentence, written), set()).add(written)

    for start in _starts(story):
        sentence = story[start:]
        charts = _sentence_charts(sentence)
        for chart, vowel in zip(charts, (True, False) if len(charts) == 2 else (None,)):
            add(sentence, chart, vowel)
    if _ends(story):
        add((), _chart(()), None)
    return _Pieces({piece: tuple(sorted(words)) for piece, words in out.items()}, tuple(sorted(out)),
                   frozenset(map(len, out)))


def _consume(story: tuple[str, ...], text: str) -> set[tuple[tuple[str, ...], str]]:
    """The states ``(words, pending)`` that ``text`` after ``story`` may lead to: whole words read, and
    the start of the next one (a prefix of one of its pieces). Empty when ``text`` leaves the grammar."""
    pieces = _pieces(story)
    states: set[tuple[tuple[str, ...], str]] = set()
    if pieces.continue_with(text):
        states.add((story, text))
    for length in pieces.lengths:
        if length > len(text) or text[:length] not in pieces.words or _splits_word(text, length):
            continue
        for word in pieces.words[text[:length]]:
            states |= _consume(story + (word,), text[length:])
    return states


def _splits_word(text: str, at: int) -> bool:
    """Whether ``text`` goes on with the same word at ``at`` (a word ends before a space or a mark)."""
    return text[at - 1].isalpha() and (text[at:at + 1].isalpha() or text[at:at + 1] == "'")


def story_prefix_states(text: str) -> set[tuple[tuple[str, ...], str]]:
    """How ``text`` reads as the start of a grammatical story: each way is its whole words and the
    start of the next word; empty when no story starts with ``text``.

    A story here is grammatical sentences joined by single spaces, each sentence in the sense of
    :func:`is_grammatical` (names and the story's shape are not checked).

    Usage: ``story_prefix_states("Once upon a ti")  # {(('Once', 'upon', 'a'), ' ti')}``
    """
    return _consume((), text)


def valid_next_tokens(tokenizer, text: str) -> set[int]:
    """The token ids that keep ``text`` the start of some grammatical story (see
    :func:`story_prefix_states`), the tokenizer's EOS included where the story may end.

    Exact for the tokenizer's pieces; cached, so calling it at every step of a generation costs one
    parse step per new word. Usage: ``valid_next_tokens(tok, "Once upon a time")  # {id of ',', ...}``
    """
    from txtgen_nb.tokenizer import special_tokens

    table = _token_table(tokenizer)
    valid: set[int] = set()
    for story, pending in story_prefix_states(text):
        valid |= _valid_from(story, pending, table)
        if not pending and _ends(story) and special_tokens(tokenizer).eos is not None:
            valid.add(special_tokens(tokenizer).eos)
    return valid


def _valid_from(story: tuple[str, ...], pending: str, table: "_TokenTable") -> set[int]:
    """Token ids whose text, after ``pending``, stays on the grammar's path from ``story``."""
    valid: set[int] = set()
    for piece in _pieces(story).texts:
        if len(piece) == len(pending) or not piece.startswith(pending):
            continue  # a piece typed whole: the state with its word read covers what follows
        rest = piece[len(pending):]
        for length in range(1, len(rest) + 1):
            valid.update(table.ids.get(rest[:length], ()))
        for token in table.longer(rest):
            if not _splits_word(pending + token, len(piece)) and _consume(story, pending + token):
                valid.update(table.ids[token])
    return valid


@dataclasses.dataclass(frozen=True)
class _TokenTable:
    """A tokenizer's vocabulary as text: the text each id appends -> its ids, and those texts sorted."""

    ids: dict[str, tuple[int, ...]]
    texts: tuple[str, ...]

    def longer(self, prefix: str) -> list[str]:
        """The token texts that start with ``prefix`` and go on past it."""
        start = bisect.bisect_right(self.texts, prefix)
        end = bisect.bisect_left(self.texts, prefix + "\U0010ffff")
        return list(self.texts[start:end])


_TABLES: dict[int, tuple[object, _TokenTable]] = {}


def _token_table(tokenizer) -> _TokenTable:
    """The text of every non-special token (byte-level pieces decoded; ``▁`` read as a space), cached."""
    from txtgen_nb.tokenizer import byte_level_bytes

    cached = _TABLES.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    special = {i for i, added in tokenizer.get_added_tokens_decoder().items() if added.special}
    ids: dict[str, list[int]] = {}
    for piece, i in tokenizer.get_vocab(with_added_tokens=True).items():
        raw = byte_level_bytes(piece)
        try:
            text = raw.decode("utf-8") if raw is not None else piece.replace("\u2581", " ")
        except UnicodeDecodeError:
            continue
        if i not in special and text:
            ids.setdefault(text, []).append(i)
    table = _TokenTable({t: tuple(sorted(v)) for t, v in ids.items()}, tuple(sorted(ids)))
    _TABLES[id(tokenizer)] = (tokenizer, table)
    return table


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``; a quote followed by "said X" stays one sentence. The last item may be
    an incomplete sentence (see ``complete_sentences``).

    Usage: ``split_sentences('"Can we play?" asked Lily. She smiled.')``
    """
    pieces: list[str] = []
    start = 0
    text = text.strip()
    for m in re.finditer(r'[.!?]"?(?=\s|$)', text):
        end = m.end()
        rest = text[end:].lstrip()
        if rest and not (rest[0].isupper() or rest[0] == '"'):
            continue
        pieces.append(text[start:end].strip())
        start = end
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return [p for p in pieces if p]


def _is_complete(sentence: str) -> bool:
    return bool(re.search(r'[.!?]"?$', sentence))


def complete_sentences(text: str) -> list[str]:
    """Sentences of ``text`` without a trailing incomplete one (including a final bare quote whose
    "said X" may have been cut off).

    Usage: ``complete_sentences("She ran. Then she")  # ['She ran.']``
    """
    sentences = split_sentences(text)
    if sentences:
        last = sentences[-1]
        bare_quote = last.startswith('"') and last.endswith('"')
        if not _is_complete(last) or bare_quote:
            sentences.pop()
    return sentences


def grammatical_rate(text_or_texts: str | Iterable[str]) -> float:
    """Share of complete sentences that are grammatical (0.0 when there are none).

    Usage: ``grammatical_rate(["Once upon a time, there was a little girl named Lily."])``
    """
    texts = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
    sentences = [s for t in texts for s in complete_sentences(t)]
    if not sentences:
        return 0.0
    return sum(is_grammatical(s) for s in sentences) / len(sentences)


def vocabulary() -> frozenset[str]:
    """Every word the grammar can produce (punctuation excluded). Usage: ``len(vocabulary())``"""
    words: set[str] = set()
    used_classes = {"name", "person_kind", "parent"} | {b[1:] for b in _BINDING_CLASSES.values() if b[0] == "@"}
    for rules in GRAMMAR.values():
        for _, body in rules:
            for sym in body:
                if sym.startswith("@"):
                    used_classes.add(sym[1:])
                elif sym == "A":
                    words.update(("a", "an"))
                elif not (sym.startswith("$") or _is_nonterminal(sym)) and sym not in _PUNCT and sym != '"':
                    words.add(sym)
    for rules in _RECOGNITION_RULES.values():
        for body in rules:
            words.update(w for w in body.split() if not (w.startswith("@") or _is_nonterminal(w)))
    for cls in used_classes:
        words.update(LEXICON[cls])
    return frozenset(words)
