#!/usr/bin/env python3
"""Generate the synthetic "small bookshop" sample dataset in ``data_samples/``.

Everything here is invented: titles, authors, publishers, users and ratings
come from word lists and a seeded latent model below. No real data is used.

Usage::

    python data_samples/make_samples.py

Re-running regenerates every file byte-identically (fixed seed, no set/hash
iteration order, no floats in the outputs, ``\\n`` line endings, UTF-8).

Files written (next to this script):

* items.csv, new_items.csv  -- books
* users.csv, new_users.csv  -- readers
* interactions.csv          -- user-item ratings with timestamps
* triples.ttl               -- extra knowledge graph facts (Turtle)
* triples.csv               -- a tiny 3(+2)-column triple table
* bad/*                     -- deliberately broken files for error-message tests
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

SEED = 20240601
OUT = Path(__file__).resolve().parent

N_ITEMS = 200
N_USERS = 100
N_NEW_ITEMS = 20
N_NEW_USERS = 15
POP_EXP = 2.0  # Zipf-Mandelbrot popularity: 1 / (rank + POP_OFF) ** POP_EXP
POP_OFF = 5.0
TASTE_EXP = 1.5  # sharpness of genre taste when choosing what to read
N_COLD_ITEMS = 20  # catalog items held out of the interaction log on purpose

TS_START = 1704067200  # 2024-01-01T00:00:00Z
TS_END = 1767225599  # 2025-12-31T23:59:59Z

GENRES = [
    "Fantasy",
    "Science Fiction",
    "Mystery",
    "Thriller",
    "Romance",
    "History",
    "Biography",
    "Cooking",
    "Travel",
    "Poetry",
    "Horror",
    "Self-Help",
]
G_INDEX = {g: i for i, g in enumerate(GENRES)}

# Genres that plausibly co-occur on one book (first = most likely).
GENRE_AFFINITY = {
    "Fantasy": ["Romance", "Horror", "Science Fiction"],
    "Science Fiction": ["Thriller", "Fantasy", "Horror"],
    "Mystery": ["Thriller", "History", "Romance"],
    "Thriller": ["Mystery", "Science Fiction", "Horror"],
    "Romance": ["History", "Fantasy", "Mystery"],
    "History": ["Biography", "Travel", "Mystery"],
    "Biography": ["History", "Self-Help", "Travel"],
    "Cooking": ["Travel", "Biography", "Self-Help"],
    "Travel": ["Cooking", "History", "Biography"],
    "Poetry": ["Romance", "Biography", "Travel"],
    "Horror": ["Thriller", "Fantasy", "Mystery"],
    "Self-Help": ["Biography", "Cooking", "Travel"],
}

# Subgenre -> parent genre(s); used in triples.ttl and to tag description themes.
SUBGENRES = {
    "Epic Fantasy": ["Fantasy"],
    "Urban Fantasy": ["Fantasy"],
    "Space Opera": ["Science Fiction"],
    "Cyberpunk": ["Science Fiction"],
    "Cozy Mystery": ["Mystery"],
    "Police Procedural": ["Mystery"],
    "Psychological Thriller": ["Thriller"],
    "Spy Thriller": ["Thriller"],
    "Historical Romance": ["Romance", "History"],
    "Military History": ["History"],
    "Memoir": ["Biography"],
    "Baking": ["Cooking"],
    "Gothic Horror": ["Horror"],
    "Mindfulness": ["Self-Help"],
}

PROTAGONISTS = [
    "Ada", "Bram", "Cleo", "Dario", "Edda", "Felix", "Greta", "Hugo", "Iris",
    "Jasper", "Kaia", "Leon", "Maren", "Nico", "Orla", "Pim", "Quinn", "Rosa",
    "Silas", "Tamsin", "Ulla", "Viktor", "Wren", "Yara", "Zeno",
]

# ---------------------------------------------------------------------------
# Per-genre text material. ``themes`` entries are (sentence, subgenre|None);
# every theme names the genre explicitly so text similarity carries signal.
# ---------------------------------------------------------------------------
TEXT = {
    "Fantasy": dict(
        titles=[
            "The {A} {N}", "{N} of {P}", "The Last {N} of {P}", "Song of the {A} {N}",
            "The {N} and the {N2}", "{A} {N}", "A Crown for {P}", "The {N} of {A} Fire",
        ],
        A=["Ashen", "Hollow", "Silver", "Sunken", "Broken", "Thorned", "Gilded",
           "Forgotten", "Shattered", "Winter", "Ninth", "Crimson"],
        N=["Crown", "Dragon", "Throne", "Sword", "Oracle", "Witch", "Tower", "Rune",
           "Gate", "Serpent", "Phoenix", "Sorcerer", "Heir", "Oath"],
        P=["Varrow", "Eldmere", "Kethra", "Dunmoor", "Caer Ilith", "the Glass Isles",
           "the Northern Reach", "Thornwall"],
        beast=["dragon", "serpent", "frost giant", "phoenix", "wyrm"],
        role=["apprentice", "blacksmith", "thief", "scribe", "shepherd", "healer"],
        Q=["sweeping", "spellbinding", "richly imagined", "enchanting", "dark", "gripping"],
        hooks=[
            "In the kingdom of {P}, a young {role} discovers a forbidden magic that could save or doom the realm.",
            "When the ancient {beast} beneath {P} awakens, {name} must gather a band of unlikely allies and cross a world at war.",
            "{name}, the exiled heir of {P}, must reclaim a stolen throne with nothing but a broken sword and a stubborn heart.",
            "A disgraced witch and a reluctant knight set out to break the curse that has frozen {P} in an endless winter.",
            "Every hundred years the {beast} of {P} demands a tribute; this time {name} refuses to pay.",
            "In a London where fae bargains are sold in back alleys, {name}, a young {role}, owes a debt to the wrong court.",
        ],
        themes=[
            ("A {Q} epic fantasy of dragons, oaths, rival kingdoms and ancient prophecy.", "Epic Fantasy"),
            ("A {Q} fantasy adventure of sorcery, quests and a magic system with a terrible price.", None),
            ("Rich worldbuilding, court intrigue and wild magic make this a {Q} high fantasy.", "Epic Fantasy"),
            ("A {Q} urban fantasy where modern city streets hide witches, fae and hungry spirits.", "Urban Fantasy"),
            ("A {Q} fantasy tale about found family, mythical beasts and the cost of power.", None),
        ],
        closers=[
            "The first book in a fantasy saga that readers of magic and myth will devour.",
            "Perfect for fans of swords, sorcery and sprawling imaginary worlds.",
            "A fantasy novel that feels both timeless and new.",
        ],
    ),
    "Science Fiction": dict(
        titles=[
            "The {A} {N}", "Beyond the {A} {N}", "Signal from {P}", "The {P} Protocol",
            "{N} {num}", "{A} {N}", "Children of the {N}", "The {N} at the End of Time",
        ],
        A=["Quantum", "Silent", "Distant", "Hollow", "Red", "Final", "Synthetic",
           "Orbital", "Dark", "Neon", "Fractured"],
        N=["Horizon", "Station", "Signal", "Colony", "Engine", "Drift", "Array",
           "Singularity", "Frontier", "Archive", "Vector", "Machine"],
        P=["Kepler-9", "Titan", "the Outer Belt", "Proxima", "Europa", "New Shenzhen",
           "the Oort Cloud", "Ganymede"],
        num=["Zero", "Nine", "Seven", "Prime", "Eleven"],
        Q=["cerebral", "thrilling", "mind-bending", "thought-provoking", "fast-paced", "ambitious"],
        hooks=[
            "Aboard a failing generation ship bound for {P}, engineer {name} uncovers a secret the crew was never meant to know.",
            "In a near-future megacity run by algorithms, {name} hacks the system that decides who gets to live above the smog.",
            "When a signal arrives from {P}, a small team of scientists must decide whether humanity should answer.",
            "The last android on {P} wakes up with someone else's memories and a countdown only it can hear.",
            "After the collapse of Earth's orbital ring, salvage pilot {name} finds a derelict starship that should not exist.",
        ],
        themes=[
            ("A {Q} science fiction novel about artificial intelligence, memory and what makes us human.", None),
            ("{Q_cap} hard science fiction with plausible physics, first contact and the loneliness of deep space.", None),
            ("A {Q} space opera full of starships, interstellar empires and galactic rebellion.", "Space Opera"),
            ("A {Q} cyberpunk story of neon streets, hackers, implants and corporate surveillance.", "Cyberpunk"),
            ("A {Q} science fiction adventure of time travel, alien worlds and future technology.", None),
        ],
        closers=[
            "Perfect for readers who love big ideas and bold speculative futures.",
            "Science fiction at its most inventive and humane.",
            "A landmark of modern science fiction.",
        ],
    ),
    "Mystery": dict(
        titles=[
            "Death at {P}", "The {A} {N}", "Murder at the {N2}", "A {N} for the Inspector",
            "The {P} Affair", "The Case of the {A} {N}", "Murder in {P}",
        ],
        A=["Missing", "Crooked", "Silent", "Poisoned", "Unfinished", "Midnight", "Last", "Vanishing"],
        N=["Key", "Letter", "Ledger", "Locket", "Alibi", "Witness", "Inheritance",
           "Clue", "Portrait", "Candlestick"],
        N2=["Vicarage", "Old Mill", "Lighthouse", "Tearoom", "Manor", "Bookshop"],
        P=["Harrow Hall", "Little Wexford", "Saint Aubin", "Kittering", "Blackwater Quay",
           "Fenwick Abbey", "Pellham Cross"],
        Q=["classic", "clever", "charming", "twisty", "atmospheric", "delightful"],
        hooks=[
            "When a wealthy collector is found dead in the library at {P}, Inspector {name} must untangle a web of family secrets.",
            "Amateur sleuth {name} runs a bakery by day and solves murders by night in the quiet village of {P}.",
            "A body in the millpond, a missing will and six guests who all had a motive: welcome to {P}.",
            "Retired detective {name} just wanted a peaceful summer in {P}, until the vicar vanished on the night of the fete.",
            "A decades-old disappearance resurfaces when {name} finds a coded letter hidden in a second-hand book.",
        ],
        themes=[
            ("A {Q} whodunit with a locked-room puzzle, red herrings and a detective who never misses a clue.", None),
            ("A {Q} cozy mystery full of village gossip, suspicious neighbours, tea and one very clever cat.", "Cozy Mystery"),
            ("A {Q} police procedural mystery of forensic evidence, interrogations and a detective under pressure.", "Police Procedural"),
            ("A {Q} detective mystery about murder, inheritance and the secrets a small town keeps.", None),
        ],
        closers=[
            "Fans of traditional detective fiction will race to the final reveal.",
            "A mystery that plays fair with its clues right to the last page.",
            "The perfect crime novel for a rainy afternoon.",
        ],
    ),
    "Thriller": dict(
        titles=[
            "The {A} {N}", "{N} Zero", "No Safe {N2}", "The {P} File", "Seventy-Two Hours in {P}",
            "The {N} Game", "{A} Protocol", "Burn the {N}",
        ],
        A=["Silent", "Final", "Burning", "Deadly", "Hidden", "Cold", "Black", "Rogue", "Last"],
        N=["Hour", "Asset", "Target", "Witness", "Cipher", "Contract", "Deadline",
           "Handler", "Extraction", "Ledger"],
        N2=["House", "Harbour", "Ground", "Passage", "Haven"],
        P=["Berlin", "Lisbon", "Geneva", "Istanbul", "Marseille", "Prague", "Cape Town", "Tallinn"],
        Q=["relentless", "twist-filled", "breathless", "taut", "explosive", "nerve-shredding"],
        hooks=[
            "A disgraced intelligence officer has forty-eight hours to stop a plot that reaches the highest levels of government.",
            "After witnessing a killing in {P}, {name} becomes the target of a conspiracy nobody will explain.",
            "A perfect marriage, a missing husband and a wife who remembers nothing about the night he disappeared.",
            "An encrypted drive, a dead courier in {P} and a hacker named {name} who was never supposed to find either.",
            "Former special-forces medic {name} is pulled back into the game when the old unit starts dying one by one.",
        ],
        themes=[
            ("A {Q} spy thriller of espionage, double agents, betrayal and high-stakes suspense.", "Spy Thriller"),
            ("A {Q} psychological thriller about obsession, lies and a marriage that is not what it seems.", "Psychological Thriller"),
            ("A {Q} action thriller of chases, conspiracies and a ticking clock.", None),
            ("A {Q} suspense thriller where no one can be trusted and every twist cuts deeper.", None),
        ],
        closers=[
            "Pulse-pounding suspense that will keep you reading past midnight.",
            "A thriller with a final twist you will not see coming.",
            "Lock the doors before you start this one.",
        ],
    ),
    "Romance": dict(
        titles=[
            "{Season} at {P}", "The {N} Between Us", "Love in {P}", "A {A} {N}",
            "Letters to {name}", "The {N} on {P} Lane", "Meet Me in {P}", "{A} Hearts",
        ],
        A=["Second", "Sweet", "Unexpected", "Perfect", "Stolen", "Lovely", "Secret", "Borrowed"],
        N=["Promise", "Summer", "Distance", "Secret", "Bookshop", "Vineyard", "Harbour", "Kiss"],
        P=["Rosehill", "Lake Como", "Cornwall", "Provence", "Nantucket", "Willow Bay", "Amalfi"],
        Season=["Summer", "Christmas", "Spring", "Autumn", "Midwinter"],
        Q=["heartwarming", "swoony", "charming", "tender", "sparkling", "steamy"],
        hooks=[
            "{name} returns to {P} to sell the family cottage and runs straight into the one person {name} never stopped loving.",
            "Two rival bakers are forced to share a kitchen for one summer in {P}.",
            "A jilted bride, a grumpy innkeeper and a snowstorm that closes every road out of {P}.",
            "When {name} inherits a failing vineyard in {P}, falling for the stubborn winemaker next door is not part of the plan.",
            "In Regency London, a bluestocking heiress strikes a bargain with the most scandalous duke in society.",
        ],
        themes=[
            ("A {Q} romance about second chances, family and falling in love when you least expect it.", None),
            ("A {Q} slow-burn love story with witty banter and an enemies-to-lovers twist.", None),
            ("A {Q} historical romance of ballrooms, arranged marriages and forbidden love.", "Historical Romance"),
            ("A {Q} romantic comedy about a fake relationship that becomes real love.", None),
        ],
        closers=[
            "A feel-good romantic read with a guaranteed happy ending.",
            "Romance readers will fall head over heels.",
            "Pack it for the beach and fall in love.",
        ],
    ),
    "History": dict(
        titles=[
            "The Age of {Topic}", "The Fall of {City}", "{Topic}: A New History",
            "Empires of {Thing}", "The {A} Century", "A People's History of {Topic}",
            "The Rise and Fall of {Topic}",
        ],
        Topic=["the Silk Road", "Salt", "Steam", "the Hanseatic League", "the Printing Press",
               "the Atlantic Trade", "Byzantium", "the Cold War", "the Great Plague", "the Railways"],
        City=["Constantinople", "Carthage", "Babylon", "Tenochtitlan", "Rome", "Antioch"],
        Thing=["Sugar", "Spice", "Silver", "Coal", "Tea", "Iron"],
        A=["Long", "Forgotten", "Burning", "Iron", "Golden", "Restless"],
        Q=["vivid", "authoritative", "panoramic", "gripping", "meticulous", "revisionist"],
        hooks=[
            "A narrative history of {Topic}, from its origins to its lasting legacy in the modern world.",
            "Drawing on letters, ledgers and archives, this book reconstructs everyday life in the shadow of {Topic}.",
            "How did {Topic} reshape the map of the world? This book follows merchants, soldiers and rulers to find out.",
            "The siege and fall of {City}, told hour by hour through the eyes of those who lived it.",
        ],
        themes=[
            ("A {Q} history book exploring empires, wars, trade and the ordinary people caught up in great events.", None),
            ("A {Q} military history of campaigns, generals, battles and the soldiers who fought them.", "Military History"),
            ("A {Q} social history of medieval towns, guilds, plague and religion.", None),
            ("A {Q} work of world history about revolutions, colonial empires and the birth of nations.", None),
        ],
        closers=[
            "Accessible, meticulously researched history for the curious reader.",
            "History writing at its most alive.",
            "Essential reading for anyone who wants to understand the past.",
        ],
    ),
    "Biography": dict(
        titles=[
            "{Person}: A Life", "The {A} Life of {Person}", "Becoming {Person}",
            "{Person} and the {N}", "The Woman Who {Verb}", "The Man Who {Verb}",
            "My Years in {Place}",
        ],
        Person=["Ada Lindqvist", "Tomas Reyes", "Helena Marsh", "Otto Brandvik", "Clara Devereux",
                "Ivo Marchetti", "Nell Ashby", "Sigrid Aalto", "Benedikt Rauch", "Odile Sauvage",
                "Ottilie Fenwick", "Casimir Duval", "Hester Grange", "Anselm Kofi", "Rosalind Vey",
                "Teodora Bianchi"],
        A=["Restless", "Brilliant", "Secret", "Unlikely", "Extraordinary", "Quiet"],
        N=["Telescope", "Orchestra", "Atlas", "Laboratory", "Cello", "Glider"],
        Verb=["Mapped the Sky", "Flew Too Far", "Painted the Sea", "Taught the World to Count",
              "Crossed the Ice", "Built the Bridge"],
        Place=["the Kitchen", "the Orchestra", "the Arctic", "the Ring", "the Newsroom"],
        role=["composer", "explorer", "physicist", "suffragist", "painter", "engineer",
              "chess champion", "aviator", "astronomer"],
        Q=["moving", "definitive", "candid", "luminous", "revealing", "warm"],
        hooks=[
            "The definitive life of a pioneering {role} whose work changed the field forever.",
            "A candid memoir of growing up between two languages and finding a voice as a {role}.",
            "Born in poverty and dismissed by the establishment, this {role} went on to astonish the world.",
            "Told through diaries and private letters, the story of a {role} who refused to be forgotten.",
        ],
        themes=[
            ("A {Q} biography of ambition, love and loss, told through diaries and letters.", None),
            ("A {Q} memoir about family, identity, illness and the long road to recovery.", "Memoir"),
            ("A {Q} biography that restores a forgotten pioneer of science and art to the spotlight.", None),
            ("A {Q} portrait of a public figure, written with the intimacy of a memoir.", "Memoir"),
        ],
        closers=[
            "An intimate portrait of a remarkable life.",
            "Biography at its most absorbing.",
            "A life story that reads like a novel.",
        ],
    ),
    "Cooking": dict(
        titles=[
            "The {A} Kitchen", "Simple {Cuisine}", "Cooking with {Ingredient}",
            "{Ingredient} and {Ingredient2}", "{Num} Recipes for {Occasion}",
            "A Table in {Region}", "The {Cuisine} Pantry", "Sunday {Meal}",
        ],
        A=["Everyday", "Slow", "Seasonal", "Green", "Little", "Modern", "Sunlit", "Weekday"],
        Cuisine=["Italian", "Levantine", "Nordic", "Japanese", "Mexican", "French", "Indian", "Korean"],
        Ingredient=["Salt", "Smoke", "Butter", "Lemons", "Spice", "Sourdough", "Garlic", "Herbs", "Honey"],
        Num=["Fifty", "One Hundred", "Sixty", "Eighty"],
        Occasion=["Busy Weeknights", "Slow Sundays", "Long Tables", "Cold Evenings"],
        Region=["Sicily", "Oaxaca", "Kyoto", "Anatolia", "Brittany", "Kerala"],
        Meal=["Lunch", "Suppers", "Roasts", "Breakfast"],
        Q=["beautiful", "practical", "joyful", "generous", "inspiring", "no-fuss"],
        hooks=[
            "Over one hundred recipes celebrating {Cuisine} home cooking, from weeknight dinners to festive feasts.",
            "A cookbook devoted to {ingredient_l}, with recipes for breads, soups, roasts and desserts.",
            "Chef {name} shares the dishes of a childhood kitchen and the simple techniques behind them.",
            "From market to table: seasonal {Cuisine} recipes for vegetables, fish and slow-cooked stews.",
        ],
        themes=[
            ("A {Q} cookbook with clear techniques, seasonal ingredients and beautiful food photography.", None),
            ("A {Q} baking book of breads, cakes, pastries and sourdough, with step-by-step recipes.", "Baking"),
            ("A {Q} collection of vegetarian recipes, family meals and kitchen tips for home cooks.", None),
            ("A {Q} cookbook exploring regional cuisine, spices and traditional recipes.", None),
        ],
        closers=[
            "A must-have for home cooks and food lovers.",
            "You will reach for this cookbook again and again.",
            "Recipes to gather friends around the table.",
        ],
    ),
    "Travel": dict(
        titles=[
            "Walking {Region}", "The Road to {Region}", "{A} Roads", "A Year in {Region}",
            "Letters from {Region}", "Slow Train to {Region}", "The {A} Map",
        ],
        Region=["Patagonia", "the Balkans", "Hokkaido", "the Andes", "the Hebrides", "Morocco",
                "Iceland", "Georgia", "the Camino", "Lapland"],
        A=["Blue", "Long", "Winding", "Empty", "Salt", "Northern", "Wandering"],
        Q=["lyrical", "funny", "adventurous", "evocative", "wise", "vivid"],
        hooks=[
            "A travel memoir of six months on foot across {Region}, meeting shepherds, monks and fellow wanderers.",
            "Part guidebook, part adventure story, this journey through {Region} celebrates slow travel.",
            "With a battered rucksack and no plan, {name} set off for {Region} and stayed for a year.",
            "By bicycle, ferry and night bus, a restless writer crosses {Region} in search of a vanished relative.",
        ],
        themes=[
            ("{Q_cap} travel writing about landscapes, local food and the strangers who become friends on the road.", None),
            ("A {Q} travel book of mountains, trains, hiking trails and remote villages.", None),
            ("A {Q} travel guide and memoir packed with maps, journeys and practical advice for explorers.", None),
        ],
        closers=[
            "Essential reading for armchair travellers and restless explorers.",
            "It will make you want to pack your bags tonight.",
            "Travel writing that lingers long after the journey ends.",
        ],
    ),
    "Poetry": dict(
        titles=[
            "{A} {N}", "Poems for the {A} Hour", "The {N} Poems", "{N} and Other Poems",
            "What the {N} Said", "A Field Guide to {N2}", "Songs of {A} {N}",
        ],
        A=["Quiet", "Late", "Winter", "Borrowed", "Tender", "Blue", "Unfinished", "Paper", "Salt"],
        N=["River", "Orchard", "Lantern", "Moth", "Tide", "Window", "Sparrow", "Harvest", "Ash", "Fern"],
        N2=["Small Griefs", "Leaving", "Rain", "Distances", "Kitchens"],
        t1=["grief", "rivers", "motherhood", "migration", "winter light", "small towns", "the sea"],
        t2=["desire", "memory", "language", "the body", "faith", "home", "forgetting"],
        Q=["luminous", "startling", "tender", "fierce", "quiet", "haunting"],
        hooks=[
            "A debut poetry collection about {t1}, {t2} and the quiet rituals of home.",
            "These poems move between {t1} and {t2} with startling lyric precision.",
            "Written over a single year beside the sea, these poems map {t1} and {t2}.",
            "A book-length sequence of poems that listens closely to {t1}.",
        ],
        themes=[
            ("A {Q} poetry collection of lyrical verse exploring memory, landscape, love and the passing seasons.", None),
            ("{Q_cap} poems in sonnets, free verse and prose poetry about family and loss.", None),
            ("A {Q} book of poetry about nature, birds, rivers and the shape of grief.", None),
        ],
        closers=[
            "A luminous collection for anyone who reads poetry slowly and often.",
            "Poems to read aloud, and then again.",
            "A poet to watch.",
        ],
    ),
    "Horror": dict(
        titles=[
            "The {A} {N}", "{N} House", "What Lies in {P}", "Do Not Open the {N}",
            "The {P} Haunting", "Beneath {P}", "The {N} in the Dark",
        ],
        A=["Drowned", "Rotting", "Whispering", "Pale", "Crawling", "Hungry", "Nameless", "Silent"],
        N=["Well", "Attic", "Orchard", "Mirror", "Chapel", "Doll", "Lighthouse", "Cellar", "Static", "Scarecrow"],
        P=["Marrow Creek", "Greyhallow", "the Fens", "Blackpine", "Ravensmoor", "Hollin Vale"],
        Q=["chilling", "terrifying", "atmospheric", "unsettling", "gruesome", "eerie"],
        hooks=[
            "A family moves into an old farmhouse outside {P}, and their youngest daughter begins talking to something in the walls.",
            "Every thirty years, the town of {P} forgets one of its children. This year, {name} remembers.",
            "Six friends rent a cabin near {P} for the weekend; by Sunday, only five of them are still themselves.",
            "The lighthouse keeper at {P} has not slept in a month, because the thing in the water sings all night.",
        ],
        themes=[
            ("A {Q} horror novel of haunted houses, folk terror and creeping dread.", None),
            ("{Q_cap} supernatural horror soaked in ghosts, possession and nightmares that linger.", None),
            ("A {Q} gothic horror tale of crumbling mansions, family curses and the restless dead.", "Gothic Horror"),
            ("A {Q} horror story of monsters, blood and survival in the wilderness.", None),
        ],
        closers=[
            "Not for the faint of heart: read it with the lights on.",
            "Horror that crawls under your skin and stays there.",
            "You will never look at an old house the same way again.",
        ],
    ),
    "Self-Help": dict(
        titles=[
            "The {A} Habit", "The Art of {Gerund}", "{Num} Days to {Goal}", "{N} Matters",
            "Less, but {Better}", "The {A} Mind", "A Short Guide to {Gerund}",
        ],
        A=["Small", "Calm", "Kind", "Brave", "Focused", "Unhurried", "Resilient"],
        Gerund=["Slowing Down", "Saying No", "Starting Over", "Paying Attention", "Letting Go", "Sleeping Well"],
        Num=["Thirty", "Forty", "Twenty-One", "Ninety"],
        Goal=["a Calmer You", "Better Sleep", "Deep Focus", "Lasting Change", "Financial Freedom"],
        N=["Attention", "Rest", "Kindness", "Courage", "Purpose"],
        Better=["Better", "Brighter", "Kinder", "Calmer"],
        goal=["beating procrastination", "sleeping better", "managing anxiety", "building confidence",
              "saving money", "setting boundaries"],
        Q=["practical", "warm", "evidence-based", "no-nonsense", "encouraging", "wise"],
        hooks=[
            "A {Q} guide to building better habits, managing stress and finding focus in a distracted world.",
            "Psychologist {name} offers simple daily exercises for {goal}.",
            "Why do we keep doing what we know is bad for us? This book explains the science of change and how to use it for {goal}.",
            "Drawing on years of coaching sessions, {name} shows a gentler way of {goal}.",
        ],
        themes=[
            ("A {Q} self-help book grounded in research on motivation, habits and productivity.", None),
            ("A {Q} self-help guide to mindfulness, meditation, breathing and living in the present moment.", "Mindfulness"),
            ("A {Q} self-help workbook on confidence, relationships, personal growth and wellbeing.", None),
        ],
        closers=[
            "An encouraging guide for anyone ready to change their life one small step at a time.",
            "Self-help that actually helps.",
            "Keep it on your bedside table.",
        ],
    ),
}

DE_TITLES = [
    "Der Schatten über {P}", "Die Stille nach dem Sturm", "Das Erbe von {P}", "Der letzte Sommer",
    "Die Spur im Schnee", "Das Haus am See", "Nachtzug nach {P}", "Die Glasinsel",
    "Das Lied der Krähen", "Zwischen den Zeilen",
]
DE_PLACES = ["Wolfsheim", "Lindau", "Rügen", "Altmark", "Kahlenberg"]
FR_TITLES = [
    "L'Ombre de {P}", "Le Dernier Été", "La Maison des Silences", "Les Jardins de {P}",
    "Un Hiver à {P}", "La Mémoire du Sel", "Le Phare Oublié", "Les Lettres Perdues",
    "La Nuit des Lanternes", "Le Goût des Saisons",
]
FR_PLACES = ["Saint-Malo", "Valmont", "Sarlat", "Honfleur", "Arles"]

# ---------------------------------------------------------------------------
# People, places, organisations (all invented).
# ---------------------------------------------------------------------------
FIRST_NAMES = [
    "Alba", "Ansel", "Beatrix", "Cyrus", "Delphine", "Ezra", "Fenna", "Gideon", "Harriet",
    "Idris", "Juno", "Kasimir", "Linnea", "Magnus", "Nadia", "Oskar", "Petra", "Rafael",
    "Saoirse", "Tobias", "Una", "Vesna", "Wilhelmina", "Xavier", "Yusuf", "Zelda", "Arlo",
    "Bianca", "Cormac", "Dagny", "Emrys", "Farah", "Hollis", "Imogen", "Jovan", "Keziah",
    "Lorcan", "Mireille", "Niamh", "Otis", "Priya", "Rohan", "Signe", "Teodor", "Valentina",
    "Wendell", "Anouk", "Bastian", "Carys", "Desmond",
]
LAST_NAMES = [
    "Ashgrove", "Blackwood", "Calloway", "Dunmore", "Everly", "Fairweather", "Garroway",
    "Hallorann", "Ingleby", "Jessop", "Kestrel", "Larkspur", "Merriweather", "Nightingale",
    "Oakhurst", "Penhallow", "Quarrington", "Ravenscroft", "Sinclair-Oduya", "Thorne",
    "Underhill", "Vance", "Whitlock", "Yardley", "Zoller", "Abernethy", "Brightwater",
    "Coldridge", "Delacroix-Hale", "Elsworth", "Fitzgerald-Moss", "Greaves", "Holloway",
    "Ivanova", "Juniper", "Kowalczyk", "Lindqvist", "Montague", "Nakamura", "O'Farrell",
    "Pemberton", "Rasmussen", "Stroud", "Tallis", "Vasquez", "Wilde", "Achterberg", "Byrne",
]
FEATURED_AUTHOR = "Mara Quill"
EURO_AUTHORS = {  # author -> (language, birth city)
    "Lena Hartmann": ("de", "Hamburg"),
    "Jonas Keller": ("de", "Munich"),
    "Friederike Vogt": ("de", "Berlin"),
    "Élise Marchand": ("fr", "Lyon"),
    "Luc Fontaine": ("fr", "Paris"),
    "Amélie Roussel": ("fr", "Marseille"),
}
NEW_AUTHOR = "Noor Castellane"  # appears only in new_items.csv (and triples.ttl)

CITIES = {  # city -> country (countries match users.csv values)
    "London": "United Kingdom", "Manchester": "United Kingdom", "Edinburgh": "United Kingdom",
    "Dublin": "Ireland", "Cork": "Ireland", "New York": "United States",
    "Chicago": "United States", "Portland": "United States", "Toronto": "Canada",
    "Montreal": "Canada", "Berlin": "Germany", "Hamburg": "Germany", "Munich": "Germany",
    "Paris": "France", "Lyon": "France", "Marseille": "France", "Amsterdam": "Netherlands",
    "Madrid": "Spain", "Barcelona": "Spain",
}
ANGLO_CITIES = [c for c in CITIES if CITIES[c] in ("United Kingdom", "Ireland", "United States", "Canada")]

PUBLISHERS = {  # publisher -> home city
    "Harrow & Finch": "London",
    "Lantern Press": "Edinburgh",
    "Blue Heron Books": "New York",
    "Northgate Publishing": "Manchester",
    "Quillstone": "Dublin",
    "Saltmarsh Editions": "Portland",
    "Meridian House": "Toronto",
    "Copperleaf": "Chicago",
    "Verlag Sonnenfeld": "Berlin",
    "Éditions du Phare": "Paris",
}
EN_PUBLISHERS = list(PUBLISHERS)[:8]

AWARDS = {  # award id -> (english label, genres eligible, extra labels)
    "ember_crown_award": ("Ember Crown Award", ["Fantasy", "Science Fiction", "Horror"], []),
    "silver_magnifier_prize": ("Silver Magnifier Prize", ["Mystery", "Thriller"], []),
    "clio_medal": ("Clio Medal for History", ["History", "Biography", "Travel"], []),
    "hearthside_book_prize": ("Hearthside Book Prize", ["Cooking", "Self-Help", "Romance"], []),
    "meridian_poetry_prize": ("Meridian Prize for Poetry", ["Poetry"], []),
    "prix_du_phare": ("Lighthouse Prize", [], [("Prix du Phare", "fr"), ("Leuchtturm-Preis", "de")]),
}

COUNTRIES = ["United Kingdom", "United States", "Germany", "France", "Canada", "Ireland",
             "Netherlands", "Spain"]
COUNTRY_P = [0.24, 0.2, 0.14, 0.1, 0.1, 0.08, 0.07, 0.07]
OCCUPATIONS = {  # occupation -> genres it nudges taste towards
    "student": ["Fantasy", "Science Fiction", "Horror", "Poetry"],
    "teacher": ["History", "Poetry", "Biography"],
    "engineer": ["Science Fiction", "Thriller", "History"],
    "nurse": ["Romance", "Mystery", "Self-Help"],
    "chef": ["Cooking", "Travel"],
    "retired": ["History", "Biography", "Mystery", "Travel"],
    "artist": ["Poetry", "Fantasy", "Biography"],
    "software developer": ["Science Fiction", "Fantasy", "Self-Help"],
    "lawyer": ["Thriller", "Mystery", "Biography"],
    "librarian": ["Mystery", "Poetry", "History", "Fantasy"],
}
YOUNG_GENRES = ["Fantasy", "Science Fiction", "Horror", "Romance"]
OLDER_GENRES = ["History", "Biography", "Travel", "Cooking"]

ITEM_COLUMNS = ["item_id", "title", "description", "genres", "author", "publisher", "year", "language"]
USER_COLUMNS = ["user_id", "age", "gender", "country", "occupation", "favourite_genres"]
INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
class Picker:
    """Thin wrapper around a seeded numpy Generator for list-based choices."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def pick_p(self, seq, p):
        p = np.asarray(p, dtype=float)
        return seq[int(self.rng.choice(len(seq), p=p / p.sum()))]

    def sample(self, seq, k):
        idx = self.rng.choice(len(seq), size=k, replace=False)
        return [seq[int(i)] for i in idx]

    def random(self) -> float:
        return float(self.rng.random())


SLOT_RE = re.compile(r"\{([A-Za-z]+?)(\d?)(_l|_cap)?\}")


def fix_articles(text: str) -> str:
    """'a explorer' -> 'an explorer' after slot filling."""
    return re.sub(r"\b([Aa]) (?=[AEIOUaeiou])", lambda m: m.group(1) + "n ", text)


def fill(template: str, slots: dict, pk: Picker, extra: dict | None = None,
         chosen: dict | None = None) -> str:
    """Fill ``{Slot}``, ``{Slot2}`` (distinct from ``{Slot}``), ``{slot_l}`` (lower) and ``{Q_cap}``.

    Pass the same ``chosen`` dict to several calls to reuse slot values (e.g. the
    same place in a book's title and its blurb).
    """
    extra = extra or {}
    chosen = {} if chosen is None else chosen

    def repl(m: re.Match) -> str:
        name, digit, mod = m.group(1), m.group(2), m.group(3)
        key = name + digit
        if key in extra:
            val = extra[key]
        elif key in slots and isinstance(slots[key], list):
            val = chosen.get(key) or pk.pick(slots[key])
        else:
            base = slots.get(name) if name in slots else None
            if base is None:
                # lower-case variants ``cuisine_l`` -> list ``Cuisine``
                base = slots[name[0].upper() + name[1:]]
            used = {v for k, v in chosen.items() if k.rstrip("0123456789") == name}
            options = [b for b in base if b not in used] or base
            val = chosen.get(key) or pk.pick(options)
        chosen[key] = val
        if mod == "_l":
            return val.lower()
        if mod == "_cap":
            return val[0].upper() + val[1:]
        return val

    return fix_articles(SLOT_RE.sub(repl, template))


def uri(node_type: str, node_id: str) -> str:
    return f"urn:kgcs:{node_type}:{quote(node_id, safe='')}"


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(header)
        for r in rows:
            w.writerow(r)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


# ---------------------------------------------------------------------------
# Authors
# ---------------------------------------------------------------------------
def make_authors(pk: Picker) -> list[dict]:
    names = [FEATURED_AUTHOR] + list(EURO_AUTHORS)
    taken = set(names) | {NEW_AUTHOR}
    firsts = pk.sample(FIRST_NAMES, len(FIRST_NAMES))
    lasts = pk.sample(LAST_NAMES, len(LAST_NAMES))
    i = 0
    while len(names) < 60:
        name = f"{firsts[i % len(firsts)]} {lasts[(i * 7 + i // len(lasts)) % len(lasts)]}"
        if name not in taken:
            names.append(name)
            taken.add(name)
        i += 1
    # Primary genres: 5 authors per genre, shuffled; secondary from affinities.
    primaries = [g for g in GENRES for _ in range(5)]
    primaries = pk.sample(primaries, len(primaries))
    euro_genres = ["Mystery", "Romance", "Poetry", "History", "Cooking", "Thriller"]
    authors = []
    for k, name in enumerate(names):
        primary = primaries[k]
        if name == FEATURED_AUTHOR:
            primary = "Fantasy"
        elif name in EURO_AUTHORS:
            primary = euro_genres[list(EURO_AUTHORS).index(name)]
        secondary = pk.pick(GENRE_AFFINITY[primary][:2]) if pk.random() < 0.5 else None
        debut = int(np.clip(2024 - pk.rng.exponential(18.0), 1952, 2023))
        if name in EURO_AUTHORS:
            lang, city = EURO_AUTHORS[name]
            publisher = "Verlag Sonnenfeld" if lang == "de" else "Éditions du Phare"
        else:
            lang, city = "en", pk.pick(ANGLO_CITIES)
            publisher = pk.pick(EN_PUBLISHERS)
        authors.append(dict(name=name, primary=primary, secondary=secondary, debut=debut,
                            lang=lang, city=city, publisher=publisher))
    return authors


# ---------------------------------------------------------------------------
# Books
# ---------------------------------------------------------------------------
def book_genres(author: dict, pk: Picker) -> list[str]:
    first = author["primary"]
    if author["secondary"] and pk.random() < 0.25:
        first = author["secondary"]
    genres = [first]
    if pk.random() < 0.38:
        cand = [g for g in GENRE_AFFINITY[first] if g not in genres]
        genres.append(pk.pick_p(cand, [0.55, 0.3, 0.15][: len(cand)]))
        if pk.random() < 0.12:
            cand = [g for g in GENRE_AFFINITY[genres[1]] if g not in genres]
            if cand:
                genres.append(pk.pick(cand))
    return genres


def make_description(genres, lang, name, shared, pk: Picker) -> tuple[str, str | None]:
    """1 sentence = theme only; 2 = hook + theme; 3 = hook + theme + closer.

    The theme may come from the book's second genre so that both genres are named.
    """
    g1 = genres[0]
    t = TEXT[g1]
    n_sent = int(pk.rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
    use_second = n_sent >= 2 and len(genres) > 1 and pk.random() < 0.7
    theme_genre = genres[1] if use_second else g1
    theme_text, subgenre = pk.pick(TEXT[theme_genre]["themes"])
    theme = fill(theme_text, TEXT[theme_genre], pk, {"name": name})
    sentences = [theme]
    if n_sent >= 2:
        sentences.insert(0, fill(pk.pick(t["hooks"]), t, pk, {"name": name}, chosen=shared))
    if n_sent == 3:
        sentences.append(pk.pick(t["closers"]))
    if lang != "en":
        sentences.append({"de": "German-language edition.", "fr": "French-language edition."}[lang])
    return " ".join(sentences), subgenre


def make_book(item_id: str, author: dict, pk: Picker, used_titles: set, used_descriptions: set,
              year_range) -> dict:
    genres = book_genres(author, pk)
    g1 = genres[0]
    t = TEXT[g1]
    lang = "en"
    if author["lang"] != "en" and pk.random() < 0.75:
        lang = author["lang"]
    name = pk.pick(PROTAGONISTS)
    for _ in range(200):
        shared: dict[str, str] = {}
        if lang == "de":
            title = fill(pk.pick(DE_TITLES), {"P": DE_PLACES}, pk)
        elif lang == "fr":
            title = fill(pk.pick(FR_TITLES), {"P": FR_PLACES}, pk)
        else:
            title = fill(pk.pick(t["titles"]), t, pk, {"name": name}, chosen=shared)
        if title not in used_titles:
            break
    else:  # pragma: no cover - word lists are big enough
        raise RuntimeError("could not find a unique title")
    used_titles.add(title)

    for _ in range(50):  # retry until the blurb is unique in the catalog
        description, subgenre = make_description(genres, lang, name, dict(shared), pk)
        if description not in used_descriptions:
            break
    used_descriptions.add(description)
    lo, hi = year_range
    span = max(0, min(30, 2025 - author["debut"]))
    year = int(np.clip(author["debut"] + pk.rng.integers(0, span + 1), lo, hi))
    if lang == "en" and author["lang"] != "en":
        publisher = pk.pick(EN_PUBLISHERS)  # English editions of de/fr authors
    elif lang != "en" or pk.random() < 0.8:
        publisher = author["publisher"]  # authors mostly stay with their house
    elif lang == "en":
        publisher = pk.pick(EN_PUBLISHERS)
    else:
        publisher = "Verlag Sonnenfeld" if lang == "de" else "Éditions du Phare"
    return dict(item_id=item_id, title=title, description=description, genres=genres,
                author=author["name"], publisher=publisher, year=year, language=lang,
                subgenre=subgenre)


def make_items(authors: list[dict], pk: Picker, used_titles: set, used_desc: set) -> list[dict]:
    # Every author has >= 1 book; the rest are distributed with a Zipf-ish skew.
    counts = np.ones(len(authors), dtype=int)
    w = 1.0 / np.arange(1, len(authors) + 1) ** 0.75
    # Zipf rank order: random, but the de/fr authors sit mid-table (a few books each).
    euro = [k for k, a in enumerate(authors) if a["name"] in EURO_AUTHORS]
    rest = [k for k in range(len(authors)) if k not in euro]
    rest = [rest[int(i)] for i in pk.rng.permutation(len(rest))]
    order = np.array(rest[:18] + euro + rest[18:])
    extra = pk.rng.choice(len(authors), size=N_ITEMS - len(authors), p=w / w.sum())
    for e in extra:
        counts[order[e]] += 1
    book_authors = [a for a, c in zip(authors, counts) for _ in range(int(c))]
    book_authors = pk.sample(book_authors, len(book_authors))
    return [make_book(f"b{i + 1:04d}", a, pk, used_titles, used_desc, (1950, 2025))
            for i, a in enumerate(book_authors)]


def item_row(b: dict) -> list:
    return [b["item_id"], b["title"], b["description"], "|".join(b["genres"]), b["author"],
            b["publisher"], b["year"], b["language"]]


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------
def make_user(user_id: int, pk: Picker) -> dict:
    occupation = pk.pick_p(list(OCCUPATIONS), [8, 10, 10, 8, 5, 9, 7, 12, 6, 5])
    if occupation == "student":
        age = int(pk.rng.integers(17, 27))
    elif occupation == "retired":
        age = int(pk.rng.integers(60, 86))
    else:
        age = int(np.clip(pk.rng.normal(40, 11), 22, 67))
    gender = pk.pick_p(["F", "M", "X"], [0.5, 0.44, 0.06])
    country = pk.pick_p(COUNTRIES, COUNTRY_P)
    prior = np.ones(len(GENRES))
    for g in OCCUPATIONS[occupation]:
        prior[G_INDEX[g]] += 1.5
    young = np.clip((45 - age) / 25, -1, 1)
    for g in YOUNG_GENRES:
        prior[G_INDEX[g]] *= np.exp(0.5 * young)
    for g in OLDER_GENRES:
        prior[G_INDEX[g]] *= np.exp(-0.5 * young)
    prior *= np.exp(pk.rng.normal(0, 0.35, len(GENRES)))
    k = int(pk.rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    p = prior**2 / (prior**2).sum()
    fav_idx = [int(i) for i in pk.rng.choice(len(GENRES), size=k, replace=False, p=p)]
    logits = np.log(prior) + pk.rng.normal(0, 0.3, len(GENRES))
    logits[fav_idx] += 2.2
    taste = np.exp(logits) / np.exp(logits).sum()
    favourites = [GENRES[i] for i in sorted(fav_idx, key=lambda i: -taste[i])]
    return dict(user_id=user_id, age=age, gender=gender, country=country,
                occupation=occupation, favourites=favourites, taste=taste)


def user_row(u: dict) -> list:
    return [u["user_id"], u["age"], u["gender"], u["country"], u["occupation"],
            "|".join(u["favourites"])]


# ---------------------------------------------------------------------------
# Interactions
# ---------------------------------------------------------------------------
def make_interactions(users, items, authors, pk: Picker):
    n_items = len(items)
    G = np.zeros((n_items, len(GENRES)))
    for i, b in enumerate(items):
        for rank, g in enumerate(b["genres"]):
            G[i, G_INDEX[g]] = 1.0 if rank == 0 else 0.6
    G /= G.sum(axis=1, keepdims=True)
    author_ix = {a["name"]: k for k, a in enumerate(authors)}
    item_author = np.array([author_ix[b["author"]] for b in items])

    quality = pk.rng.normal(0, 1, n_items)  # latent book quality
    # Popularity: Zipf over a rank that is partly driven by quality; recent books get a bump.
    rank_key = quality + pk.rng.normal(0, 1.0, n_items)
    rank = np.empty(n_items, dtype=int)
    rank[np.argsort(-rank_key)] = np.arange(1, n_items + 1)
    years = np.array([b["year"] for b in items])
    pop = (1.0 / (rank + POP_OFF) ** POP_EXP) * np.where(years >= 2015, 1.4, 1.0)
    # Cold items: a random handful (biased to the newest books) with no interactions at all.
    cold_w = np.where(years >= 2023, 4.0, 1.0)
    cold = pk.rng.choice(n_items, size=N_COLD_ITEMS, replace=False, p=cold_w / cold_w.sum())
    eligible = np.ones(n_items, dtype=bool)
    eligible[cold] = False

    rows = []
    for u in users:
        taste = u["taste"]
        match = G @ taste  # in (0, max taste]
        s = match / taste.max()  # 0..1 "fit to taste"
        user_bias = pk.rng.normal(0.0, 0.35)
        n = int(min(5 + pk.rng.negative_binomial(1.6, 1.6 / (1.6 + 32)), 110))
        start = int(pk.rng.integers(TS_START, TS_END - 120 * 86400))
        end = int(pk.rng.integers(start + 60 * 86400, TS_END))
        stamps = np.sort(pk.rng.integers(start, end, size=n))
        read = np.zeros(n_items, dtype=bool)
        liked = np.zeros(len(authors))
        seen = np.zeros(len(authors))
        for t in range(n):
            w = pop * s**TASTE_EXP * (1.0 + 1.5 * liked[item_author] + 0.3 * seen[item_author])
            w = np.where(eligible & ~read, w, 0.0)
            i = int(pk.rng.choice(n_items, p=w / w.sum()))
            read[i] = True
            a = item_author[i]
            r = (2.3 + 2.4 * s[i] + 0.45 * quality[i] + user_bias
                 + 0.35 * min(liked[a], 2.0) + pk.rng.normal(0, 0.55))
            rating = int(np.clip(np.rint(r), 1, 5))
            seen[a] += 1
            if rating >= 4:
                liked[a] += 1
            rows.append([u["user_id"], items[i]["item_id"], rating, int(stamps[t])])
    rows.sort(key=lambda r: (r[3], r[0]))
    return rows, quality


# ---------------------------------------------------------------------------
# Knowledge graph
# ---------------------------------------------------------------------------
def make_turtle(authors, items, new_items, quality, pk: Picker) -> tuple[str, int]:
    prefixes = {
        "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
        "rel": "urn:kgcs:rel:",
        "item": "urn:kgcs:item:",
        "author": "urn:kgcs:author:",
        "genre": "urn:kgcs:genre:",
        "city": "urn:kgcs:city:",
        "country": "urn:kgcs:country:",
        "publisher": "urn:kgcs:publisher:",
        "award": "urn:kgcs:award:",
    }

    def node(node_type: str, node_id: str) -> str:
        local = quote(node_id, safe="")
        if re.fullmatch(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-%]*[A-Za-z0-9_])?", local):
            return f"{node_type}:{local}"
        return f"<{uri(node_type, node_id)}>"

    def lit(text: str, lang: str | None = None) -> str:
        esc = text.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{esc}"' + (f"@{lang}" if lang else "")

    blocks: list[tuple[str, list[str]]] = []
    n_triples = 0

    def block(comment: str, lines: list[str]) -> None:
        nonlocal n_triples
        n_triples += len(lines)
        blocks.append((comment, lines))

    # Genre hierarchy.
    block("Subgenres", [f"{node('genre', s)} rel:subgenre_of {node('genre', p)} ."
                        for s in SUBGENRES for p in SUBGENRES[s]])
    # Geography.
    block("Cities", [f"{node('city', c)} rel:located_in {node('country', CITIES[c])} ."
                     for c in CITIES])
    # Publishers.
    block("Publishers", [f"{node('publisher', p)} rel:based_in {node('city', c)} ."
                         for p, c in PUBLISHERS.items()])
    # Authors: birthplaces for ~70% (+ all Euro authors + the new author).
    all_authors = authors + [dict(name=NEW_AUTHOR, primary="Science Fiction",
                                  secondary="Fantasy", debut=2025, city="Toronto")]
    born = [a for a in all_authors
            if a["name"] in EURO_AUTHORS or a["name"] in (FEATURED_AUTHOR, NEW_AUTHOR) or pk.random() < 0.65]
    block("Author birthplaces", [f"{node('author', a['name'])} rel:born_in {node('city', a['city'])} ."
                                 for a in born])
    # Influences: later authors influenced by earlier authors sharing a genre.
    infl = []
    by_debut = sorted(all_authors, key=lambda a: (a["debut"], a["name"]))
    for k, a in enumerate(by_debut):
        if a["name"] == NEW_AUTHOR:
            earlier = [b for b in by_debut[:k] if b["primary"] in ("Science Fiction", "Fantasy")]
            for b in earlier[:2]:
                infl.append((a["name"], b["name"]))
            continue
        if pk.random() > 0.5:
            continue
        genres_a = {a["primary"], a["secondary"]}
        earlier = [b for b in by_debut[:k] if b["debut"] < a["debut"]
                   and (b["primary"] in genres_a or b["secondary"] in genres_a)]
        if earlier:
            infl.append((a["name"], pk.pick(earlier)["name"]))
    block("Influences (author -> earlier author)",
          [f"{node('author', x)} rel:influenced_by {node('author', y)} ." for x, y in infl])

    # Awards: labels, then winners (highest latent quality books, matched by genre/language).
    award_lines = []
    for aid, (label, _, extra) in AWARDS.items():
        award_lines.append(f"{node('award', aid)} rdfs:label {lit(label, 'en')} .")
        for text, lang in extra:
            award_lines.append(f"{node('award', aid)} rdfs:label {lit(text, lang)} .")
    block("Awards", award_lines)

    items_in_kg: dict[str, dict] = {}
    wins = []
    order = np.argsort(-quality)
    per_award: dict[str, int] = {a: 0 for a in AWARDS}
    for i in order[:40]:
        b = items[int(i)]
        if b["language"] != "en":
            aid = "prix_du_phare"
        else:
            cands = [a for a, (_, gs, _) in AWARDS.items() if b["genres"][0] in gs]
            if not cands:
                continue
            aid = cands[0]
        if per_award[aid] >= 4 or len(wins) >= 20:
            continue
        per_award[aid] += 1
        wins.append((b, aid))
        items_in_kg[b["item_id"]] = b
    for b in pk.sample(new_items, 2):
        cands = [a for a, (_, gs, _) in AWARDS.items() if b["genres"][0] in gs] or ["prix_du_phare"]
        wins.append((b, cands[0]))
        items_in_kg[b["item_id"]] = b
    wins.sort(key=lambda x: x[0]["item_id"])
    block("Award winners", [f"{node('item', b['item_id'])} rel:won {node('award', aid)} ."
                            for b, aid in wins])

    # Subgenres of books whose description used a subgenre-flavoured theme.
    sub_lines = []
    for b in items + new_items:
        if b["subgenre"] and pk.random() < 0.75:
            sub_lines.append(f"{node('item', b['item_id'])} rel:has_subgenre {node('genre', b['subgenre'])} .")
            items_in_kg[b["item_id"]] = b
    block("Book subgenres", sub_lines)

    block("Book labels (ids are not human-readable)",
          [f"{node('item', iid)} rdfs:label {lit(items_in_kg[iid]['title'], items_in_kg[iid]['language'])} ."
           for iid in sorted(items_in_kg)])

    out = ["# Synthetic knowledge-graph facts for the kg-coldstart bookshop sample.",
           "# Generated by data_samples/make_samples.py -- do not edit by hand.",
           "# Node identity: urn:kgcs:<node_type>:<url-encoded id>.", ""]
    out += [f"@prefix {p}: <{ns}> ." for p, ns in prefixes.items()]
    for comment, lines in blocks:
        out += ["", f"# {comment}"] + lines
    return "\n".join(out) + "\n", n_triples


def make_triple_table(authors, items) -> list[list[str]]:
    """~20 plain-text triples (raw, un-encoded ids) for 3-column table ingest."""
    rows: list[list[str]] = []
    # Book series: authors with >= 3 books in the same primary genre.
    series_names = {  # genre -> series name (first eligible author in that genre gets it)
        "Fantasy": "The Ember Cycle",
        "Cooking": "Salt, Smoke and Fire",
        "Mystery": "The Harrow Hall Mysteries",
        "Science Fiction": "Outer Belt Chronicles",
        "Thriller": "The Handler Files",
        "Romance": "Willow Bay Summers",
    }
    by_author: dict[str, list[dict]] = {}
    for b in items:
        by_author.setdefault(b["author"], []).append(b)
    done: list[str] = []
    for a in authors:
        g = a["primary"]
        books = [b for b in by_author.get(a["name"], []) if b["genres"][0] == g]
        if g in series_names and g not in done and len(books) >= 2 and len(done) < 4:
            for b in sorted(books, key=lambda b: (b["year"], b["item_id"]))[:3]:
                rows.append([b["item_id"], "part_of_series", series_names[g], "item", "series"])
            done.append(g)
    # Nationality of a few authors (matches user countries).
    for a in authors[:7]:
        rows.append([a["name"], "citizen_of", CITIES[a["city"]], "author", "country"])
    # Loose genre relatedness.
    for g1, g2 in [("Mystery", "Thriller"), ("History", "Biography"), ("Fantasy", "Science Fiction"),
                   ("Cooking", "Travel")]:
        rows.append([g1, "related_to", g2, "genre", "genre"])
    return rows


# ---------------------------------------------------------------------------
# Broken files for error-message tests
# ---------------------------------------------------------------------------
def make_bad_files(interactions, items) -> None:
    bad = OUT / "bad"
    base = [list(map(str, r)) for r in interactions[:12]]

    rows = [r[:] for r in base]
    rows[3][0] = ""  # line 5
    write_csv(bad / "interactions_nan_user.csv", INTERACTION_COLUMNS, rows)

    rows = [r[:] for r in base]
    rows[5][2] = "-2"  # line 7
    write_csv(bad / "interactions_negative_rating.csv", INTERACTION_COLUMNS, rows)

    rows = [r[:] for r in base]
    rows[2][3] = "yesterday"  # line 4
    write_csv(bad / "interactions_bad_timestamp.csv", INTERACTION_COLUMNS, rows)

    rows = [r[:] for r in base[:9]]
    rows.insert(5, rows[1][:])  # line 7 duplicates line 3
    write_csv(bad / "interactions_duplicate.csv", INTERACTION_COLUMNS, rows)

    cols = [c for c in ITEM_COLUMNS if c != "title"]
    rows = [[v for c, v in zip(ITEM_COLUMNS, item_row(b)) if c != "title"] for b in items[:6]]
    write_csv(bad / "items_missing_column.csv", cols, rows)

    write_text(bad / "triples_invalid.ttl", "\n".join([
        "@prefix rel: <urn:kgcs:rel:> .",
        "@prefix author: <urn:kgcs:author:> .",
        "@prefix city: <urn:kgcs:city:> .",
        "",
        "author:Mara%20Quill rel:born_in city:London .",
        "city:London rel:located_in <urn:kgcs:country:United%20Kingdom .",
        "author:Lena%20Hartmann rel:born_in city:Hamburg .",
        "",
    ]))

    write_text(bad / "README.md", """# Deliberately broken sample files

Used by tests that check error messages. Line numbers are 1-based and count the
header as line 1. Generated by `../make_samples.py` (rows copied from the
synthetic `interactions.csv` / `items.csv`, then damaged).

| file | what is wrong | line |
|---|---|---|
| `interactions_nan_user.csv` | empty `user_id` (row reads `,b….,r,ts`) | 5 |
| `interactions_negative_rating.csv` | `rating` is `-2` | 7 |
| `interactions_bad_timestamp.csv` | `timestamp` is `yesterday` (not parseable) | 4 |
| `interactions_duplicate.csv` | exact duplicate of line 3 | 7 (duplicates 3) |
| `items_missing_column.csv` | header has no `title` column (all other item columns present) | 1 |
| `triples_invalid.ttl` | unterminated IRI `<urn:kgcs:country:United%20Kingdom` (missing `>`) | 6 |

All other lines in these files are valid.
""")


# ---------------------------------------------------------------------------
def main() -> None:
    pk = Picker(SEED)
    authors = make_authors(pk)
    used_titles: set[str] = set()
    used_desc: set[str] = set()
    items = make_items(authors, pk, used_titles, used_desc)

    users = [make_user(uid, pk) for uid in range(1, N_USERS + 1)]
    new_users = [make_user(uid, pk) for uid in range(1001, 1001 + N_NEW_USERS)]

    interactions, quality = make_interactions(users, items, authors, pk)

    # New items: mostly catalog authors, three by a brand-new author.
    new_author = dict(name=NEW_AUTHOR, primary="Science Fiction", secondary="Fantasy",
                      debut=2025, lang="en", city="Toronto", publisher="Meridian House")
    picks = pk.sample(authors, N_NEW_ITEMS - 3)
    new_authors = picks[:8] + [new_author] + picks[8:12] + [new_author] + picks[12:] + [new_author]
    new_items = [make_book(f"n{i + 1:04d}", a, pk, used_titles, used_desc, (2025, 2026))
                 for i, a in enumerate(new_authors)]
    for b in new_items:
        b["year"] = int(2025 + (pk.random() < 0.5))

    write_csv(OUT / "items.csv", ITEM_COLUMNS, [item_row(b) for b in items])
    write_csv(OUT / "new_items.csv", ITEM_COLUMNS, [item_row(b) for b in new_items])
    write_csv(OUT / "users.csv", USER_COLUMNS, [user_row(u) for u in users])
    write_csv(OUT / "new_users.csv", USER_COLUMNS, [user_row(u) for u in new_users])
    write_csv(OUT / "interactions.csv", INTERACTION_COLUMNS, interactions)

    ttl, n_triples = make_turtle(authors, items, new_items, quality, pk)
    # Facts about the new books travel with them (new_triples.ttl): a triple may only name an
    # item the graph already has, so they are ingested after new_items.csv.
    new_refs = tuple(f"item:{b['item_id']} " for b in new_items)
    lines = ttl.splitlines()
    is_new = [ln.startswith(new_refs) for ln in lines]
    head = [ln for ln in lines if ln.startswith("@prefix")]
    write_text(OUT / "triples.ttl", "\n".join(ln for ln, n in zip(lines, is_new) if not n) + "\n")
    write_text(OUT / "new_triples.ttl", "\n".join(
        ["# Knowledge-graph facts about the books in new_items.csv (ingest after them).", ""] + head + [""]
        + [ln for ln, n in zip(lines, is_new) if n]) + "\n")
    write_csv(OUT / "triples.csv", ["head", "relation", "tail", "head_type", "tail_type"],
              make_triple_table(authors, items))
    make_bad_files(interactions, items)

    n_cold = len({b["item_id"] for b in items} - {r[1] for r in interactions})
    print(f"items={len(items)} new_items={len(new_items)} users={len(users)} "
          f"new_users={len(new_users)} interactions={len(interactions)} "
          f"items_without_interactions={n_cold} ttl_triples={n_triples}")


if __name__ == "__main__":
    main()
